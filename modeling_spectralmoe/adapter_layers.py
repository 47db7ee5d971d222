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


def token_bank_update(
    features: torch.Tensor,
    tokens: torch.Tensor,
    token2feat: nn.Linear,
    delta_f: nn.Linear,
    score_scale: float,
    normalise_scores: bool = False,
) -> torch.Tensor:
    """Rein's token attention in its direct form, as SET and FADA use it on transformed features:
    `delta_f(softmax(x T^T / score_scale)[..., 1:] @ token2feat(T[1:]) + x)`.

    With `normalise_scores`, the scores are instance-normalised over the m tokens first (biased variance, eps 1e-5),
    as SET's amplitude branch and FADA's high-frequency branch do.
    """
    scores = features @ tokens.t()
    if normalise_scores:
        mean, variance = scores.mean(-1, keepdim=True), scores.var(-1, unbiased=False, keepdim=True)
        scores = (scores - mean) / torch.sqrt(variance + 1e-5)
    weights = torch.softmax(scores / score_scale, dim=-1)[..., 1:]  # token 0 is the "no change" slot
    return delta_f(weights @ token2feat(tokens[1:]) + features)


def official_token_bound(patch_size: int, width: int) -> float:
    """Bound of the uniform initialisation Rein-family code gives its token factors: `sqrt(6 / (3 p^2 + width))`."""
    return math.sqrt(6.0 / (3 * patch_size**2 + width))


def rein_family_sizes(config) -> dict:
    """The constructor arguments SET and FADA take from a `SpectralMoEConfig` (Rein-family token methods)."""
    backbone = config.backbone_config
    return dict(
        num_layers=config.num_adapted_layers, hidden_size=backbone.hidden_size, num_tokens=config.num_expert_tokens,
        token_rank=config.expert_rank, query_dim=config.decoder_hidden_dim, patch_size=backbone.patch_size,
        scale_init=config.adapter_scale_init,
    )
