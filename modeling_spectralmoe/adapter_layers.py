"""Pieces shared by the token adapters (SpectralMoE, Rein, DepthForge): their linear layers' initialisation, the
pairing of depth with visual patch tokens, and the link from token banks to the decoder's query positions."""

import math

import torch
from torch import nn
from transformers import initialization as init


def reset_token_linears(*linears: nn.Linear) -> None:
    """Kaiming-uniform(a=sqrt(5)) weights and the default fan-in bias of `token2feat`, `delta_f`, `transform` and
    `merge`; transformers' init functions leave tensors already loaded from a checkpoint untouched."""
    for linear in linears:
        init.kaiming_uniform_(linear.weight, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(linear.in_features)
        init.uniform_(linear.bias, -bound, bound)


def depth_patches(depth_hidden_states, depth_num_prefix_tokens: int, visual_shape) -> torch.Tensor:
    """The depth patch tokens (B, N, D) of a layer, which must pair position by position with the visual ones."""
    if depth_hidden_states is None:
        raise ValueError("This adapter fuses depth: `depth_hidden_states` is required.")
    depth = depth_hidden_states[:, depth_num_prefix_tokens:]
    if depth.shape != visual_shape:
        raise ValueError(
            f"Depth patch tokens {tuple(depth.shape)} must pair one-to-one with visual patch tokens "
            f"{tuple(visual_shape)}: check the depth grid alignment and the prefix-token counts."
        )
    return depth


def pooled_query_embeddings(banks: torch.Tensor, transform: nn.Linear, merge: nn.Linear) -> torch.Tensor:
    """Query position embedding (m, Q) from per-layer token banks (L, m, D) (SPEC §2): `transform` to (L, m, Q),
    max / mean / last layer stacked on a new last axis and flattened, interleaved per channel (q0-max, q0-mean,
    q0-last, q1-max, ...), then `merge`."""
    queries = transform(banks)
    pooled = torch.stack([queries.max(0).values, queries.mean(0), queries[-1]], dim=-1)  # (m, Q, 3)
    return merge(pooled.flatten(-2))
