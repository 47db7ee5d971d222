"""The "frozen VFM + Mask2Former" baseline of the paper's Table 2 behind the adapter protocol."""

import torch
from torch import nn
from transformers import initialization as init

from .adapter_protocol import TokenAdapter


class FrozenBaselineAdapter(TokenAdapter):
    r"""
    No adaptation: the frozen encoder's tokens pass through every layer unchanged, and the decoder's query position
    embedding is an ordinary learned table (Mask2Former's own), since there are no tokens to derive it from. Only the
    head (and this table) train, which is the paper's "frozen DINOv3 / DOFA + Mask2Former" row.

    Args:
        num_queries (`int`): decoder queries (m).
        query_dim (`int`): width of the query position embedding (Q).
    """

    def __init__(self, num_queries: int, query_dim: int):
        super().__init__()
        self.query_position = nn.Parameter(torch.empty(num_queries, query_dim))
        self.reset_parameters()

    @classmethod
    def from_config(cls, config) -> "FrozenBaselineAdapter":
        return cls(config.num_queries, config.decoder_hidden_dim)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        init.normal_(self.query_position)  # nn.Embedding's default, as Mask2Former's learned query positions

    def no_weight_decay(self) -> set[str]:
        return {"query_position"}  # an embedding table, as Mask2Former's own query positions

    def query_embeddings(self) -> torch.Tensor:
        """The learned query position embedding, shape (m, Q)."""
        return self.query_position

    def forward(self, hidden_states, layer_idx, depth_hidden_states=None, *, grid_size, output_router_probs=False):
        """Returns the patch tokens unchanged and a zero auxiliary loss."""
        return self.output(hidden_states)
