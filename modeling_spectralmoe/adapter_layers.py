"""Pieces shared by the token adapters (SpectralMoE, Rein, DepthForge): their linear layers' initialisation and the
link from token banks to the decoder's query positions."""

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


def pooled_query_embeddings(banks: torch.Tensor, transform: nn.Linear, merge: nn.Linear) -> torch.Tensor:
    """Query position embedding (m, Q) from per-layer token banks (L, m, D): Rein's token-to-query link, which
    SpectralMoE (arXiv 2603.13352) keeps. `transform` to (L, m, Q); max / mean / last layer stacked on a new last axis
    and flattened, interleaved per channel (q0-max, q0-mean, q0-last, q1-max, ...); then `merge`."""
    queries = transform(banks)
    pooled = torch.stack([queries.max(0).values, queries.mean(0), queries[-1]], dim=-1)  # (m, Q, 3)
    return merge(pooled.flatten(-2))
