"""The authors' Rein (`LoRAReins`) and DepthForge (`DepthForgeReins`) adapter weights onto [`ReinAdapter`]: their key
names `learnable_tokens_a` (L, m, r), `learnable_tokens_b` (L, r, D), `mlp_token2feat.*`, `mlp_delta_f.*`, `scale`,
`transform.*`, `merge.*`, without a module prefix."""

import torch

from ..rein_adapter import ReinAdapter


OFFICIAL_REIN_KEYS = {
    "learnable_tokens_a": "tokens_a",
    "learnable_tokens_b": "tokens_b",
    "scale": "scale",
    **{
        f"{theirs}.{part}": f"{ours}.{part}"
        for ours, theirs in (("token2feat", "mlp_token2feat"), ("delta_f", "mlp_delta_f"), ("transform", "transform"),
                             ("merge", "merge"))
        for part in ("weight", "bias")
    },
}


def convert_official_rein_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames the authors' Rein / DepthForge adapter weights to `ReinAdapter`'s parameter names.

    Raises:
        ValueError: naming every unknown key and every missing one.
    """
    unknown = sorted(set(state_dict) - set(OFFICIAL_REIN_KEYS))
    missing = sorted(set(OFFICIAL_REIN_KEYS) - set(state_dict))
    if unknown or missing:
        raise ValueError(
            f"Official Rein adapter state dict does not fit: unexpected keys {unknown}, missing keys {missing}."
        )
    converted = {ours: state_dict[theirs] for theirs, ours in OFFICIAL_REIN_KEYS.items()}
    if converted["scale"].numel() == 1:  # a 0-d scalar, or a (1,) one
        converted["scale"] = converted["scale"].reshape(())
    return converted


def load_official_rein_weights(adapter: ReinAdapter, state_dict: dict[str, torch.Tensor]) -> None:
    """Loads the authors' Rein or DepthForge weights into `adapter` (strict).

    Raises:
        ValueError: naming every unknown key and every missing one, or a key whose shape does not fit.
    """
    converted = convert_official_rein_state_dict(state_dict)
    expected = adapter.state_dict()
    for theirs, ours in OFFICIAL_REIN_KEYS.items():
        if converted[ours].shape != expected[ours].shape:
            raise ValueError(
                f"Official Rein weight {theirs!r} has shape {tuple(converted[ours].shape)}, this adapter expects "
                f"{tuple(expected[ours].shape)} for {ours!r}."
            )
    adapter.load_state_dict(converted)


__all__ = ["OFFICIAL_REIN_KEYS", "convert_official_rein_state_dict", "load_official_rein_weights"]
