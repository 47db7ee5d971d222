"""Official weights of the Rein family onto our adapters, keys without a module prefix (`backbone.reins.` stripped):
Rein (`LoRAReins`) and DepthForge (`DepthForgeReins`) onto [`ReinAdapter`] (`learnable_tokens_a` (L, m, r),
`learnable_tokens_b` (L, r, D), `mlp_token2feat.*`, `mlp_delta_f.*`, `scale`, `transform.*`, `merge.*`); SET onto
[`SETAdapter`] (also `learnable_tokens2`, `mlp_token2feat2.*`, `mlp_delta_f2.*`); FADA onto [`FADAAdapter`] (also
`learnable_tokens_a2`, `learnable_tokens_b2` and the per-channel Haar filters `wavepool.{LL,LH,HL,HH}.weight`)."""

import torch

from torch import nn

from ..fada_adapter import FADAAdapter
from ..rein_adapter import ReinAdapter
from ..set_adapter import SETAdapter


def _linears(*pairs: tuple[str, str]) -> dict[str, str]:
    """Official -> our keys of Linear layers, given as (ours, theirs) module names."""
    return {f"{theirs}.{part}": f"{ours}.{part}" for ours, theirs in pairs for part in ("weight", "bias")}


_SHARED_LINEARS = (("token2feat", "mlp_token2feat"), ("delta_f", "mlp_delta_f"), ("transform", "transform"),
                   ("merge", "merge"))
OFFICIAL_REIN_KEYS = {
    "learnable_tokens_a": "tokens_a", "learnable_tokens_b": "tokens_b", "scale": "scale", **_linears(*_SHARED_LINEARS),
}
OFFICIAL_SET_KEYS = {
    **OFFICIAL_REIN_KEYS, "learnable_tokens2": "amplitude_tokens",
    **_linears(("amplitude_token2feat", "mlp_token2feat2"), ("amplitude_delta_f", "mlp_delta_f2")),
}
WAVEPOOL_BANDS = ("LL", "LH", "HL", "HH")  # the order of FADAAdapter.wavelet_filters
OFFICIAL_FADA_KEYS = {
    **OFFICIAL_REIN_KEYS, "learnable_tokens_a2": "high_tokens_a", "learnable_tokens_b2": "high_tokens_b",
    **_linears(("high_token2feat", "mlp_token2feat2"), ("high_delta_f", "mlp_delta_f2")),
}


def convert_official_rein_state_dict(
    state_dict: dict[str, torch.Tensor], key_map: dict[str, str] = OFFICIAL_REIN_KEYS
) -> dict[str, torch.Tensor]:
    """Renames official Rein-family adapter weights to our parameter names (`key_map`: `OFFICIAL_REIN_KEYS`,
    `OFFICIAL_SET_KEYS` or `OFFICIAL_FADA_KEYS`); FADA's four Haar filter banks become one `wavelet_filters`.

    Raises:
        ValueError: naming every unknown key and every missing one.
    """
    expected = set(key_map)
    if key_map is OFFICIAL_FADA_KEYS:
        expected |= {f"wavepool.{band}.weight" for band in WAVEPOOL_BANDS}
    unknown, missing = sorted(set(state_dict) - expected), sorted(expected - set(state_dict))
    if unknown or missing:
        raise ValueError(
            f"Official Rein-family adapter state dict does not fit: unexpected keys {unknown}, missing keys {missing}."
        )
    converted = {ours: state_dict[theirs] for theirs, ours in key_map.items()}
    if converted["scale"].numel() == 1:  # a 0-d scalar, or a (1,) one
        converted["scale"] = converted["scale"].reshape(())
    if key_map is OFFICIAL_FADA_KEYS:
        converted["wavelet_filters"] = torch.stack([state_dict[f"wavepool.{band}.weight"] for band in WAVEPOOL_BANDS])
    return converted


KEY_MAPS = {ReinAdapter: OFFICIAL_REIN_KEYS, SETAdapter: OFFICIAL_SET_KEYS, FADAAdapter: OFFICIAL_FADA_KEYS}


def load_official_rein_weights(adapter: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Loads official Rein, DepthForge, SET or FADA weights into a `ReinAdapter`, `SETAdapter` or `FADAAdapter`
    (strict).

    Raises:
        ValueError: naming every unknown key and every missing one, or a key whose shape does not fit.
    """
    key_map = KEY_MAPS[type(adapter)]
    converted = convert_official_rein_state_dict(state_dict, key_map)
    sources = {ours: theirs for theirs, ours in key_map.items()} | {"wavelet_filters": "wavepool.*.weight"}
    expected = adapter.state_dict()
    for ours, value in converted.items():
        if value.shape != expected[ours].shape:
            raise ValueError(
                f"Official weight {sources[ours]!r} has shape {tuple(value.shape)}, this adapter expects "
                f"{tuple(expected[ours].shape)} for {ours!r}."
            )
    adapter.load_state_dict(converted)


__all__ = [
    "OFFICIAL_FADA_KEYS", "OFFICIAL_REIN_KEYS", "OFFICIAL_SET_KEYS", "convert_official_rein_state_dict",
    "load_official_rein_weights",
]
