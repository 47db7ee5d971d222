"""Adapters without token banks, which give the decoder a learned query table: the "frozen VFM + Mask2Former"
baseline of the paper's Table 2, and the base of the methods that act inside the frozen layers (LoRA, AdaptFormer,
VPT)."""

import torch
from torch import nn
from transformers import initialization as init

from .adapter_protocol import TokenAdapter


class LearnedQueryAdapter(TokenAdapter):
    r"""
    Leaves the patch tokens unchanged after each layer and gives the decoder an ordinary learned query position table
    (Mask2Former's own), since there are no tokens to derive it from. Subclasses call `reset_parameters()` at the end
    of their `__init__`.

    Args:
        num_queries (`int`): decoder queries (m).
        query_dim (`int`): width of the query position embedding (Q).
    """

    def __init__(self, num_queries: int, query_dim: int):
        super().__init__()
        self.query_position = nn.Parameter(torch.empty(num_queries, query_dim))

    @classmethod
    def from_config(cls, config):
        return cls(config.num_queries, config.decoder_hidden_dim)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        init.normal_(self.query_position)  # nn.Embedding's default, as Mask2Former's learned query positions

    def no_weight_decay(self) -> set[str]:
        return {"query_position"}  # an embedding table

    def query_embeddings(self) -> torch.Tensor:
        """The learned query position embedding, shape (m, Q)."""
        return self.query_position

    def forward(self, hidden_states, layer_idx, depth_hidden_states=None, *, grid_size, output_router_probs=False):
        """Returns the patch tokens unchanged and a zero auxiliary loss."""
        return self.output(hidden_states)


class FrozenBaselineAdapter(LearnedQueryAdapter):
    """The paper's "frozen DINOv3 / DOFA + Mask2Former" row: no adaptation; only the head and the query table train."""

    def __init__(self, num_queries: int, query_dim: int):
        super().__init__(num_queries, query_dim)
        self.reset_parameters()


__all__ = ["FrozenBaselineAdapter", "LearnedQueryAdapter"]
