"""What every adaptation method plugged into a frozen encoder is: a `TokenAdapter` returning an `AdapterOutput`.

The host encoder owns its prefix tokens (cls, registers): an adapter sees and returns patch tokens only, so methods
need no knowledge of how many prefix tokens a backbone has. The host declares which of its layers carry an adapter
and which depth layer feeds each (see `FrozenVisualEncoder.adapter_sites`); an adapter's layer index counts the
adapted layers only (every layer of a plain ViT; SAM's global blocks 7, 15, 23, 31 are adapter layers 0-3).
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import ModelOutput


@dataclass
class AdapterOutput(ModelOutput):
    r"""
    Output of one adapter call, after one host layer.

    Args:
        hidden_states (`torch.FloatTensor` of shape `(batch_size, num_patches, hidden_size)`):
            The adapted patch tokens.
        aux_loss (`torch.FloatTensor` of shape `()`):
            This layer's auxiliary loss (the load-balancing loss of a routed method; 0 for the others).
        router_probs (`tuple(torch.FloatTensor)`, *optional*, returned with `output_router_probs=True` by routed
            methods):
            `(visual, depth)` gate probabilities, each of shape `(batch_size, num_patches, num_experts)` (k non-zero
            entries per token, summing to 1); depth is `None` when no depth tokens are routed.
    """

    hidden_states: torch.FloatTensor | None = None
    aux_loss: torch.FloatTensor | None = None
    router_probs: tuple[torch.FloatTensor, torch.FloatTensor | None] | None = None


class TokenAdapter(nn.Module):
    r"""
    Base of the adaptation methods. A method implements

    - `forward(hidden_states, layer_idx, depth_hidden_states=None, *, grid_size, output_router_probs=False)
      -> AdapterOutput`: called after the `layer_idx`-th adapted host layer with its patch tokens `(B, N, D)`
      (row-major over `grid_size = (h, w)`) and, for methods that use depth, the depth encoder's patch tokens
      `(B, N, D)` at the same positions;
    - `query_embeddings() -> (num_queries, query_dim)`: the decoder's query position embedding;
    - `no_weight_decay() -> set[str]`: names (relative to the adapter) of parameters trained without weight decay.

    Methods that act inside the host's layers rather than after them override `attach(encoder)` / `detach()`, and
    `encoder_parameter_names()` for the parameters they add to the encoder (saved with the adapter).
    """

    uses_depth: bool = False

    def no_weight_decay(self) -> set[str]:
        return set()

    def attach(self, encoder: nn.Module) -> None:
        """Hooks the method into the host encoder's layers (no-op for methods acting after a layer)."""

    def keep_hook(self, handle) -> None:
        """Remembers a hook `attach` installed, so `detach` removes it."""
        self.__dict__.setdefault("_hooks", []).append(handle)

    def detach(self) -> None:
        """Removes the hooks `attach` installed."""
        for handle in self.__dict__.pop("_hooks", []):
            handle.remove()

    def encoder_parameter_names(self) -> list[str]:
        """Names, relative to the host encoder, of the parameters `attach` added to it."""
        return []

    def output(self, hidden_states: torch.Tensor, aux_loss: torch.Tensor | None = None, router_probs=None):
        """An `AdapterOutput`; methods without an auxiliary loss get a zero one."""
        if aux_loss is None:
            aux_loss = hidden_states.new_zeros(())
        return AdapterOutput(hidden_states=hidden_states, aux_loss=aux_loss, router_probs=router_probs)


def check_depth_tokens(depth_hidden_states: torch.Tensor | None, hidden_states: torch.Tensor) -> torch.Tensor:
    """The depth patch tokens (B, N, D), which must pair position by position with the visual ones."""
    if depth_hidden_states is None:
        raise ValueError("This adapter fuses depth: `depth_hidden_states` is required.")
    if depth_hidden_states.shape != hidden_states.shape:
        raise ValueError(
            f"Depth patch tokens {tuple(depth_hidden_states.shape)} must pair one-to-one with visual patch tokens "
            f"{tuple(hidden_states.shape)}: check the depth grid alignment."
        )
    return depth_hidden_states


__all__ = ["AdapterOutput", "TokenAdapter", "check_depth_tokens"]
