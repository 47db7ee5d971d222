"""Dual-gating router of SpectralMoE (arXiv 2603.13352, eqs. 1-2 and 9-11): noisy top-k gates and the load-balancing
loss."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class RoutingResult:
    """Router decisions for one modality over a flat batch of T tokens.

    Args:
        gates (`torch.FloatTensor` of shape `(T, E)`): softmax over the kept logits, 0 for the other experts.
        top_k_indices (`torch.LongTensor` of shape `(T, k)`): experts kept per token, best first.
        top_k_gates (`torch.FloatTensor` of shape `(T, k)`): the gates of those experts.
        load (`torch.FloatTensor` of shape `(E,)`): smooth (Shazeer) or hard load of each expert.
    """

    gates: torch.Tensor
    top_k_indices: torch.Tensor
    top_k_gates: torch.Tensor
    load: torch.Tensor


class EuclideanDistance(torch.autograd.Function):
    """`torch.cdist(tokens, prototypes.T)` with a backward in matrix form.

    cdist's own backward materialises a (T, E, D) difference tensor; the gradient of ||x - w_e|| is (x - w_e) / d_e,
    which sums over experts as two small matrix products instead.
    """

    @staticmethod
    def forward(ctx, tokens: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        distance = torch.cdist(tokens, prototypes.t())
        ctx.save_for_backward(tokens, prototypes, distance)
        return distance

    @staticmethod
    def backward(ctx, grad_distance: torch.Tensor):
        tokens, prototypes, distance = ctx.saved_tensors
        weights = grad_distance / distance.clamp_min(1e-12)  # (T, E); the gradient at distance 0 is taken as 0
        grad_tokens = tokens * weights.sum(1, keepdim=True) - weights @ prototypes.t()
        grad_prototypes = prototypes * weights.sum(0, keepdim=True) - (weights.t() @ tokens).t()
        return grad_tokens, grad_prototypes


def project(tokens: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """`tokens @ weights` for tokens (T, D) and a skinny (D, E) matrix. As `F.linear` the weight gradient is computed
    as (E, T) @ (T, D), several times faster on CPU than the (D, T) @ (T, E) that autograd of `@` picks."""
    return F.linear(tokens, weights.t())


def gating_logits(tokens: torch.Tensor, prototypes: torch.Tensor, gating: str) -> torch.Tensor:
    """Clean router logits `h` of eq. 1, shape (T, E), for tokens (T, D) and prototypes (D, E)."""
    if gating == "softmax":
        return project(tokens, prototypes)
    distance = EuclideanDistance.apply(tokens.float(), prototypes.float()).to(tokens.dtype)
    return -distance if gating == "laplace" else -distance.square()


def cv_squared(values: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation, unbiased variance; 0 for a single expert (eq. 11)."""
    if values.numel() == 1:
        return values.new_zeros(())
    values = values.float()
    return values.var() / (values.mean().square() + 1e-10)


def smooth_load(
    clean_logits: torch.Tensor, noisy_logits: torch.Tensor, noise_std: torch.Tensor, top_logits: torch.Tensor, k: int
) -> torch.Tensor:
    """Shazeer's differentiable load: per expert, the summed probability of staying in the top k under fresh noise.

    An expert currently in the top k stays there if its noisy logit beats the (k+1)-th largest noisy logit; one that
    is out needs to beat the k-th. `top_logits` holds the k+1 largest noisy logits per token, shape (T, k+1).
    """
    threshold_if_in = top_logits[:, k : k + 1]
    threshold_if_out = top_logits[:, k - 1 : k]
    is_in = noisy_logits > threshold_if_in
    normal = torch.distributions.Normal(clean_logits.new_zeros(()), clean_logits.new_ones(()))
    prob_if_in = normal.cdf((clean_logits - threshold_if_in) / noise_std)
    prob_if_out = normal.cdf((clean_logits - threshold_if_out) / noise_std)
    return torch.where(is_in, prob_if_in, prob_if_out).sum(0)


def route(
    tokens: torch.Tensor,
    prototypes: torch.Tensor,
    noise_weights: torch.Tensor,
    top_k: int,
    gating: str,
    add_noise: bool,
) -> RoutingResult:
    """Noisy top-k gating of eqs. 1-2 for tokens (T, D) with prototypes and noise weights of shape (D, E)."""
    num_experts = prototypes.shape[1]
    clean_logits = gating_logits(tokens, prototypes, gating)
    logits, noise_std = clean_logits, None
    if add_noise:
        noise_std = F.softplus(project(tokens, noise_weights)) + 0.01
        logits = clean_logits + torch.randn_like(clean_logits) * noise_std
    top_logits, top_indices = logits.topk(min(top_k + 1, num_experts), dim=1)
    top_k_indices = top_indices[:, :top_k]
    top_k_gates = torch.softmax(top_logits[:, :top_k], dim=1)
    gates = torch.zeros_like(logits).scatter(1, top_k_indices, top_k_gates)
    if add_noise and top_k < num_experts:
        load = smooth_load(clean_logits, logits, noise_std, top_logits, top_k)
    else:
        load = (gates > 0).sum(0).to(gates.dtype)
    return RoutingResult(gates=gates, top_k_indices=top_k_indices, top_k_gates=top_k_gates, load=load)


def load_balancing_loss(routings: list[RoutingResult], coefficient: float) -> torch.Tensor:
    """`coef * Σ_modalities [CV²(importance) + CV²(load)]` (eqs. 9-11, released code's form)."""
    total = sum(cv_squared(routing.gates.sum(0)) + cv_squared(routing.load) for routing in routings)
    return coefficient * total
