"""FADA (Bi et al., NeurIPS 2024) as a plug-in: Rein-style tokens on the low- and high-frequency parts of a Haar
split of the patch tokens, reproducing the official code (`JingjunYi/FADA`, class `LoRAReins`).

The official Haar step works on the memory layout of the sequence-first tokens (N, B, D), not on each image's
feature map: the flat (n, b, c) vector is cut into B * D chunks of N values, chunk k is filtered as an image with
the 2x2 stride-2 depthwise filters of channel k mod D, and the sub-band outputs are read back row by row as (N, B, c)
low and (N, B, 3c) high features (c = D / 4). When D = N (ViT-L at a 512 crop) this is a per-token Haar transform of
the channel vector. The adjustment is never transformed back: its first c channels come from the low branch, the
others from the high branch. The official code views each chunk as a square of side sqrt(N), so the patch grid must
be square with an even side (a non-square grid would silently be read as another shape there; here it is refused).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from .adapter_layers import (
    official_token_bound, pooled_query_embeddings, rein_family_sizes, reset_token_linears, token_bank_update,
)
from .adapter_protocol import TokenAdapter

# The four 2x2 Haar filters (LL, LH, HL, HH) of the official WavePool, before training changes them per channel.
HAAR_FILTERS = 0.5 * torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[-1.0, 1.0], [-1.0, 1.0]],
                                   [[-1.0, -1.0], [1.0, 1.0]], [[1.0, -1.0], [-1.0, 1.0]]])


class FADAAdapter(TokenAdapter):
    r"""
    FADA for all `num_layers` layers of a frozen ViT (see the module docstring for the Haar split).

    Args:
        num_layers (`int`): layers of the host ViT (L).
        hidden_size (`int`): token width (D), divisible by 4.
        num_tokens (`int`, defaults to 100): tokens per layer and branch (m), also the decoder's query count.
        token_rank (`int`, defaults to 16): rank r of both token banks.
        query_dim (`int`, defaults to 256): width of the query position embedding (Q).
        patch_size (`int`, defaults to 16): enters the official initialisation bound only.
        scale_init (`float`, defaults to 1e-3): initial residual scale `s`.

    The Haar filters (`wavelet_filters`, (4, D, 1, 2, 2): LL, LH, HL, HH per channel) are trained with weight decay,
    as the official training does (it makes every parameter of the module trainable).
    """

    def __init__(self, num_layers: int, hidden_size: int, num_tokens: int = 100, token_rank: int = 16,
                 query_dim: int = 256, patch_size: int = 16, scale_init: float = 1e-3):
        super().__init__()
        if hidden_size % 4:
            raise ValueError(f"FADA splits the width into quarters: hidden_size must divide by 4, found {hidden_size}.")
        self.num_layers, self.hidden_size, self.token_rank = num_layers, hidden_size, token_rank
        self.patch_size, self.scale_init = patch_size, scale_init
        quarter = hidden_size // 4
        self.tokens_a = nn.Parameter(torch.empty(num_layers, num_tokens, token_rank))
        self.tokens_b = nn.Parameter(torch.empty(num_layers, token_rank, quarter))
        self.high_tokens_a = nn.Parameter(torch.empty(num_layers, num_tokens, token_rank))
        self.high_tokens_b = nn.Parameter(torch.empty(num_layers, token_rank, 3 * quarter))
        self.token2feat = nn.Linear(quarter, quarter)
        self.delta_f = nn.Linear(quarter, quarter)
        self.high_token2feat = nn.Linear(3 * quarter, 3 * quarter)
        self.high_delta_f = nn.Linear(3 * quarter, 3 * quarter)
        self.wavelet_filters = nn.Parameter(torch.empty(4, hidden_size, 1, 2, 2))
        self.scale = nn.Parameter(torch.empty(()))
        self.transform = nn.Linear(quarter, query_dim)
        self.merge = nn.Linear(3 * query_dim, query_dim)
        self.reset_parameters()

    @classmethod
    def from_config(cls, config) -> "FADAAdapter":
        return cls(**rein_family_sizes(config))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The official initialisation: token factors uniform (bounds of `official_token_bound` with the full width
        for the low pair and 3D/4 for the high pair), Haar filters, Linear layers PyTorch's default, scale
        `scale_init`."""
        low_bound = official_token_bound(self.patch_size, math.sqrt(self.hidden_size * self.token_rank))
        high_bound = official_token_bound(self.patch_size, math.sqrt(3 * self.hidden_size // 4 * self.token_rank))
        for factor, bound in ((self.tokens_a, low_bound), (self.tokens_b, low_bound), (self.high_tokens_a, high_bound),
                              (self.high_tokens_b, high_bound)):
            init.uniform_(factor, -bound, bound)
        init.copy_(self.wavelet_filters, HAAR_FILTERS[:, None, None].expand_as(self.wavelet_filters))
        reset_token_linears(self.token2feat, self.delta_f, self.high_token2feat, self.high_delta_f, self.transform,
                            self.merge)
        init.constant_(self.scale, self.scale_init)

    def no_weight_decay(self) -> set[str]:
        """The official configs exempt every `learnable_tokens*` and the scale (not the Haar filters)."""
        return {"tokens_a", "tokens_b", "high_tokens_a", "high_tokens_b", "scale"}

    def query_embeddings(self) -> torch.Tensor:
        """Rein's link on the low-frequency tokens (width D / 4), shape (m, Q)."""
        return pooled_query_embeddings(self.tokens_a @ self.tokens_b, self.transform, self.merge)

    def wavelet_split(self, sequence_first: torch.Tensor, grid_size: tuple[int, int]):
        """Low (N, B, c) and high (N, B, 3c) features of tokens (N, B, D) by the official memory-layout Haar step."""
        num_patches, batch_size, width = sequence_first.shape
        side = grid_size[0]
        if tuple(grid_size) != (side, side) or side % 2 or side * side != num_patches:
            raise ValueError(
                f"FADA's Haar step views the tokens as a square grid with an even side (official code), found a "
                f"{grid_size[0]} x {grid_size[1]} grid: crop or pad inputs to a square whose side is an even number of "
                "patches (e.g. 512 x 512 px)."
            )
        chunks = sequence_first.reshape(batch_size, width, side, side)  # chunk k uses channel k mod D
        bands = [
            F.conv2d(chunks, filters.to(chunks.dtype), stride=2, groups=width).reshape(num_patches, batch_size, -1)
            for filters in self.wavelet_filters
        ]
        return bands[0], torch.cat(bands[1:], dim=-1)

    def branch_deltas(self, low, high, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The low and high adjustments of layer `layer_idx` (scores scaled by sqrt(D) of the full width)."""
        score_scale = math.sqrt(self.hidden_size)
        low_tokens = self.tokens_a[layer_idx] @ self.tokens_b[layer_idx]
        high_tokens = self.high_tokens_a[layer_idx] @ self.high_tokens_b[layer_idx]
        delta_low = token_bank_update(low, low_tokens, self.token2feat, self.delta_f, score_scale)
        delta_high = token_bank_update(high, high_tokens, self.high_token2feat, self.high_delta_f, score_scale,
                                       normalise_scores=True)
        return delta_low, delta_high

    def forward(self, hidden_states, layer_idx, depth_hidden_states=None, *, grid_size, output_router_probs=False):
        """Adapts the patch tokens (B, N, D) after layer `layer_idx`; depth is not used, nothing is routed."""
        sequence_first = hidden_states.transpose(0, 1).contiguous()
        low, high = self.wavelet_split(sequence_first, grid_size)
        delta = torch.cat(self.branch_deltas(low, high, layer_idx), dim=-1)
        return self.output((sequence_first + self.scale * delta).transpose(0, 1))


__all__ = ["FADAAdapter", "HAAR_FILTERS"]
