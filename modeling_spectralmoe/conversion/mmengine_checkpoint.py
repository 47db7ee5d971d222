"""Reads mmengine / mmseg checkpoints without mmengine and without running code from the file.

mmengine's `Runner.save_checkpoint` pickles training state beside the weights (`message_hub` holds `HistoryBuffer`
objects with numpy arrays inside), so `torch.load(weights_only=True)` refuses such files and a plain `torch.load`
needs mmengine importable and trusts the file completely. This reader unpickles with an allow-list:

1. torch's tensor rebuild functions, `collections.OrderedDict`, numpy arrays and dtypes (and `_codecs.encode`, with
   which protocol-2 pickles carry bytes) are built as themselves;
2. classes of the OpenMMLab packages (`mmengine`, `mmcv`, `mmdet`, `mmseg`) become inert placeholders that keep
   their pickled state and run nothing;
3. `getattr` is allowed on a placeholder only (mmengine pickles bound methods such as `getattr(buffer, "min")`) and
   returns another placeholder;
4. every other global is refused with an error naming it.
"""

import _codecs
import _compat_pickle
import collections
import pickle
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

OPENMMLAB_PACKAGES = ("mmengine", "mmcv", "mmdet", "mmseg")
ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("_codecs", "encode"): _codecs.encode,
}


class InertObject:
    """Stands in for an object of an OpenMMLab class: holds what the pickle gave it and does nothing else."""

    qualified_name = "?"

    def __init__(self, *args):
        self.args = args

    def __setstate__(self, state):
        self.state = state

    def __repr__(self) -> str:
        return f"<inert {self.qualified_name}>"


_inert_classes: dict[str, type] = {}


def inert_class(module: str, name: str) -> type:
    """One placeholder class per pickled class name."""
    qualified_name = f"{module}.{name}"
    if qualified_name not in _inert_classes:
        _inert_classes[qualified_name] = type(name, (InertObject,), {"qualified_name": qualified_name})
    return _inert_classes[qualified_name]


def _is_inert(value) -> bool:
    return isinstance(value, InertObject) or (isinstance(value, type) and issubclass(value, InertObject))


def inert_getattr(owner, name: str) -> InertObject:
    """`getattr` for pickles, allowed only on placeholders (mmengine pickles `getattr(<HistoryBuffer>, "min")`)."""
    if not _is_inert(owner):
        raise pickle.UnpicklingError(
            f"refusing builtins.getattr on a {type(owner).__module__}.{type(owner).__qualname__}: only attributes "
            "of OpenMMLab placeholders may be pickled"
        )
    return inert_class(getattr(owner, "qualified_name", "?"), name)()


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only allow-listed globals (see the module docstring)."""

    def find_class(self, module: str, name: str):
        if (module, name) in _compat_pickle.NAME_MAPPING:  # protocol-2 pickles name Python 2 modules
            module, name = _compat_pickle.NAME_MAPPING[module, name]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[module, name]
        if module.split(".")[0] in OPENMMLAB_PACKAGES:
            return inert_class(module, name)
        if (module, name) == ("builtins", "getattr"):
            return inert_getattr
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: it is not on the allow-list")


def _restricted_pickle_module() -> types.ModuleType:
    """What `torch.load(pickle_module=...)` needs: an `Unpickler` class and a `load` function."""
    module = types.ModuleType("restricted_pickle")
    module.Unpickler = RestrictedUnpickler
    module.load = lambda file, **kwargs: RestrictedUnpickler(file, **kwargs).load()
    return module


@dataclass
class Checkpoint:
    """The parts of a checkpoint file that conversion uses.

    Args:
        state_dict (`dict[str, torch.Tensor]`): the weights.
        meta (`dict`): mmengine's `meta` (config text under `cfg`, `dataset_meta`, ...); empty for plain files.
    """

    state_dict: dict[str, torch.Tensor]
    meta: dict = field(default_factory=dict)


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Reads a `.safetensors` file, a plain tensor `.pth` or an mmengine checkpoint, never running code from it.

    Raises:
        ValueError: naming the file and the refused global when the pickle needs anything outside the allow-list.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        with safe_open(str(path), "pt") as handle:
            return Checkpoint({key: handle.get_tensor(key) for key in handle.keys()})
    try:
        content = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle_module())
    except pickle.UnpicklingError as error:
        raise ValueError(f"Refusing to read {path}: {error}. It may run code when unpickled.") from error
    if not isinstance(content, dict):
        raise ValueError(f"{path} holds a {type(content).__name__}, expected a checkpoint dict.")
    for wrapper in ("state_dict", "model"):  # mmengine's and other training scripts' wrappers
        if isinstance(content.get(wrapper), dict):
            meta = content.get("meta")
            return Checkpoint(dict(content[wrapper]), meta if isinstance(meta, dict) else {})
    return Checkpoint(dict(content))


__all__ = ["Checkpoint", "InertObject", "RestrictedUnpickler", "read_checkpoint"]
