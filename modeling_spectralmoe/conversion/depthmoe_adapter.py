"""The authors' DepthMoE adapter weights (released checkpoint, `backbone.depthmoe.*` without the prefix) onto
[`SpectralMoEAdapter`]: per-layer, per-expert tensors (`experts_a.{l}.{e}` (m, r), `experts_b.{l}.{e}` (r, D),
`w_gate.{l}.{μ}` / `w_noise.{l}.{μ}` (D, E), μ = 0 visual / 1 depth), the shared Linear layers (`mlp_token2feat`,
`mlp_delta_f`, `transform`, `merge`) and `scale`."""

import torch

from ..spectralmoe_adapter import SpectralMoEAdapter


def convert_official_adapter_state_dict(
    state_dict: dict[str, torch.Tensor], num_layers: int, num_experts: int, num_routers: int = 2
) -> dict[str, torch.Tensor]:
    """Maps the authors' per-layer, per-expert tensors onto our stacked parameters. With `num_routers=1` (a model
    without depth) only the visual router `w_gate.{l}.0` / `w_noise.{l}.0` is kept.

    Raises:
        ValueError: naming every unknown key and every missing one.
    """
    remaining = dict(state_dict)

    def take(key: str) -> torch.Tensor:
        if key not in remaining:
            raise ValueError(f"Official adapter state dict is missing {key!r}.")
        return remaining.pop(key)

    def stack(name: str, inner: int) -> torch.Tensor:
        return torch.stack(
            [torch.stack([take(f"{name}.{l}.{i}") for i in range(inner)]) for l in range(num_layers)]
        )

    converted = {
        "experts_a": stack("experts_a", num_experts),
        "experts_b": stack("experts_b", num_experts),
        "gate_prototypes": stack("w_gate", 2)[:, :num_routers],
        "noise_weights": stack("w_noise", 2)[:, :num_routers],
        "scale": take("scale").reshape(()),
    }
    for ours, theirs in (("token2feat", "mlp_token2feat"), ("delta_f", "mlp_delta_f"), ("transform", "transform"),
                         ("merge", "merge")):
        for part in ("weight", "bias"):
            converted[f"{ours}.{part}"] = take(f"{theirs}.{part}")
    if remaining:
        raise ValueError(f"Unexpected keys in the official adapter state dict: {sorted(remaining)}.")
    return converted


def load_official_adapter_weights(adapter: SpectralMoEAdapter, state_dict: dict[str, torch.Tensor]) -> None:
    """Loads the authors' DepthMoE weights into `adapter` (strict). With `fusion="none"` the file's depth routers are
    unused and skipped; the authors' `mean`/`std` buffers are not weights and are refused as unknown keys.

    Raises:
        ValueError: for `shared_gate=True` (the file has one router per modality), and naming unknown or missing keys.
    """
    if adapter.shared_gate:
        raise ValueError("The authors' weights hold one router per modality; they cannot fill `shared_gate=True`.")
    num_routers = adapter.gate_prototypes.shape[1]
    adapter.load_state_dict(
        convert_official_adapter_state_dict(state_dict, adapter.num_layers, adapter.num_experts, num_routers)
    )


__all__ = ["convert_official_adapter_state_dict", "load_official_adapter_weights"]
