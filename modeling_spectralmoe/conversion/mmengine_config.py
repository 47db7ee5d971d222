"""Reads the config text that mmengine stores in a checkpoint's `meta["cfg"]`, without executing it.

mmengine writes configs as Python source made of literals and `dict(...)` calls. Each top-level assignment is
evaluated by a literal-only interpreter of that subset; assignments outside it (lambdas, imports, ...) are skipped.
"""

import ast


class _UnsupportedExpression(ValueError):
    pass


def _literal(node: ast.AST):
    """Value of a literal / `dict(...)` expression; anything else raises `_UnsupportedExpression`."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        values = [_literal(element) for element in node.elts]
        return values if isinstance(node, ast.List) else tuple(values)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_literal(key): _literal(value) for key, value in zip(node.keys, node.values)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, (int, float)):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        if len(node.args) <= 1 and all(keyword.arg is not None for keyword in node.keywords):
            values = dict(_literal(node.args[0])) if node.args else {}
            values.update({keyword.arg: _literal(keyword.value) for keyword in node.keywords})
            return values
    raise _UnsupportedExpression(ast.dump(node)[:80])


def parse_config_text(text: str) -> dict:
    """Top-level names of an mmengine config text -> their values (literal assignments only).

    Raises:
        ValueError: when the text is not Python source.
    """
    try:
        tree = ast.parse(text)
    except SyntaxError as error:
        raise ValueError(f"The checkpoint's config text is not an mmengine config: {error}") from error
    config = {}
    for statement in tree.body:
        if not isinstance(statement, ast.Assign) or len(statement.targets) != 1:
            continue
        target = statement.targets[0]
        if isinstance(target, ast.Name):
            try:
                config[target.id] = _literal(statement.value)
            except _UnsupportedExpression:
                continue
    return config


__all__ = ["parse_config_text"]
