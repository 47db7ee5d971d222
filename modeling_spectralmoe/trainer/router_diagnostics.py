"""Router health during training: expert shares, their entropy, collapse warnings and expert maps."""

import torch


def expert_shares(gates: torch.Tensor) -> torch.Tensor:
    """Fraction of routed token slots each expert receives, (E,), for gates (B, N, E) with k non-zero per token."""
    chosen = (gates > 0).float().flatten(0, 1)
    return chosen.sum(0) / chosen.sum()


def router_statistics(router_probs: dict[str, tuple[torch.Tensor, ...] | None]) -> tuple[dict, list[str]]:
    """Scalars to log per modality and layer, and a warning for every collapsed router.

    Args:
        router_probs: `{"visual": per-layer gates, "depth": per-layer gates or None}`, each gate tensor (B, N, E).

    Returns:
        `(scalars, warnings)`: `router/{modality}/layer{l}/expert{e}` shares and `.../entropy` (in nats; log E when
        balanced); a warning names each layer where an expert gets less than 1/(4E) of the tokens.
    """
    scalars, warnings = {}, []
    for modality, per_layer in router_probs.items():
        for layer, gates in enumerate(per_layer or ()):
            shares = expert_shares(gates.detach().float().cpu())
            num_experts = shares.numel()
            prefix = f"router/{modality}/layer{layer}"
            for expert, share in enumerate(shares.tolist()):
                scalars[f"{prefix}/expert{expert}"] = share
            scalars[f"{prefix}/entropy"] = float(-(shares * shares.clamp_min(1e-12).log()).sum())
            starved = [e for e, share in enumerate(shares.tolist()) if share < 1 / (4 * num_experts)]
            if num_experts > 1 and starved:
                warnings.append(
                    f"{modality} router of layer {layer} is collapsing: experts {starved} receive less than "
                    f"1/(4E) = {1 / (4 * num_experts):.3f} of the tokens "
                    f"(shares {[round(s, 3) for s in shares.tolist()]})."
                )
    return scalars, warnings


def save_expert_maps(router_probs: tuple[torch.Tensor, ...], grid: tuple[int, int], path, layers=None) -> None:
    """PNG of the argmax-expert map of the first image at a few layers (4 evenly spaced by default)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_layers = len(router_probs)
    layers = layers or sorted({round(i * (num_layers - 1) / 3) for i in range(4)})
    num_experts = router_probs[0].shape[-1]
    colours = matplotlib.colors.ListedColormap(plt.get_cmap("tab20").colors[:num_experts])
    figure, axes = plt.subplots(1, len(layers), figsize=(3 * len(layers), 3.2), squeeze=False)
    for axis, layer in zip(axes[0], layers):
        expert_map = router_probs[layer][0].argmax(-1).reshape(grid).cpu().numpy()
        image = axis.imshow(expert_map, cmap=colours, vmin=-0.5, vmax=num_experts - 0.5, interpolation="nearest")
        axis.set_title(f"layer {layer}")
        axis.axis("off")
    figure.colorbar(image, ax=axes[0].tolist(), ticks=range(num_experts), label="expert", shrink=0.8)
    figure.suptitle("Visual tokens: chosen expert")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)

