"""The SpectralMoE adapter (Chen et al., CVPR 2026, arXiv 2603.13352): a dual-gated mixture of low-rank token experts
applied after every layer of a frozen ViT."""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from .adapter_layers import pooled_query_embeddings, reset_token_linears
from .adapter_protocol import AdapterOutput, TokenAdapter, check_depth_tokens
from .configuration_spectralmoe import FUSIONS, GATINGS, PERCEPTUAL_MAPS, SpectralMoEConfig
from .moe_routing import RoutingResult, load_balancing_loss, route


VISUAL, DEPTH = 0, 1


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {allowed}, found {value!r}.")


class SpectralMoEAdapter(TokenAdapter):
    r"""
    The plug-in module of SpectralMoE for all `num_layers` layers of a frozen ViT. After layer `l` it routes each
    visual patch token and each depth patch token to its top-k experts (one router per modality, eqs. 1-2), turns the
    experts' token banks into per-token adjustments (eqs. 3-5), fuses the depth adjustments into the visual ones
    (eq. 6) and adds the result to the visual patch tokens (eq. 7); it also returns the load-balancing loss of eqs.
    9-11. The paper's equations are numbered as in arXiv 2603.13352; where the released code differs
    (`perceptual_map`, `fusion`), both forms exist.

    Args:
        num_layers (`int`): layers of the host ViT (L).
        hidden_size (`int`): token width of the host ViT and of the depth encoder (D).
        num_experts (`int`, defaults to 6): experts per layer (E).
        top_k (`int`, defaults to 1): experts kept per token (k).
        expert_rank (`int`, defaults to 16): rank r of each expert's tokens `A @ B`.
        num_expert_tokens (`int`, defaults to 100): tokens per expert (m), also the decoder's query count.
        query_dim (`int`, defaults to 256): width of the query position embedding (Q).
        gating (`str`, defaults to `"laplace"`): `"laplace"`, `"softmax"` or `"gaussian"` router logits.
        noisy_gating (`bool`, defaults to `True`): learned router noise in training mode.
        perceptual_map (`str`, defaults to `"dot_product"`): `"dot_product"` or `"official_sum_product"`.
        fusion (`str`, defaults to `"cross_attention"`): `"cross_attention"`, `"official_diagonal"`, `"add"`, `"none"`.
        shared_gate (`bool`, defaults to `False`): one router for both modalities (ablation w/o dual gating).
        aux_loss_coef (`float`, defaults to 1000.0): weight of the load-balancing loss.
        scale_init (`float`, defaults to 1e-3): initial residual scale `s`.
    """

    def __init__(
        self,
        num_layers: int,
        hidden_size: int,
        num_experts: int = 6,
        top_k: int = 1,
        expert_rank: int = 16,
        num_expert_tokens: int = 100,
        query_dim: int = 256,
        gating: str = "laplace",
        noisy_gating: bool = True,
        perceptual_map: str = "dot_product",
        fusion: str = "cross_attention",
        shared_gate: bool = False,
        aux_loss_coef: float = 1000.0,
        scale_init: float = 1e-3,
    ):
        super().__init__()
        _check_choice("gating", gating, GATINGS)
        _check_choice("perceptual_map", perceptual_map, PERCEPTUAL_MAPS)
        _check_choice("fusion", fusion, FUSIONS)
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"`top_k` must be in [1, num_experts={num_experts}], found {top_k}.")
        self.num_layers, self.hidden_size = num_layers, hidden_size
        self.num_experts, self.top_k, self.expert_rank = num_experts, top_k, expert_rank
        self.gating, self.noisy_gating = gating, noisy_gating
        self.perceptual_map, self.fusion = perceptual_map, fusion
        self.shared_gate, self.aux_loss_coef = shared_gate, aux_loss_coef
        self.scale_init = scale_init
        self.uses_depth = fusion != "none"

        num_routers = 1 if shared_gate or fusion == "none" else 2  # "none" never routes depth tokens
        self.experts_a = nn.Parameter(torch.empty(num_layers, num_experts, num_expert_tokens, expert_rank))
        self.experts_b = nn.Parameter(torch.empty(num_layers, num_experts, expert_rank, hidden_size))
        self.gate_prototypes = nn.Parameter(torch.empty(num_layers, num_routers, hidden_size, num_experts))
        self.noise_weights = nn.Parameter(torch.empty(num_layers, num_routers, hidden_size, num_experts))
        self.token2feat = nn.Linear(hidden_size, hidden_size)
        self.delta_f = nn.Linear(hidden_size, hidden_size)
        self.scale = nn.Parameter(torch.empty(()))
        self.transform = nn.Linear(hidden_size, query_dim)
        self.merge = nn.Linear(3 * query_dim, query_dim)
        self.reset_parameters()

    @classmethod
    def from_config(cls, config: SpectralMoEConfig) -> "SpectralMoEAdapter":
        return cls(
            num_layers=config.num_adapted_layers,
            hidden_size=config.backbone_config.hidden_size,
            num_experts=config.num_experts,
            top_k=config.top_k,
            expert_rank=config.expert_rank,
            num_expert_tokens=config.num_expert_tokens,
            query_dim=config.decoder_hidden_dim,
            gating=config.gating,
            noisy_gating=config.noisy_gating,
            perceptual_map=config.perceptual_map,
            fusion=config.fusion,
            shared_gate=config.shared_gate,
            aux_loss_coef=config.aux_loss_coef,
            scale_init=config.adapter_scale_init,
        )

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """A kaiming-uniform per expert (fan-in r); B, gates and noise zero (so training starts from the frozen model);
        Linear layers kaiming-uniform(a=sqrt(5)); scale `scale_init` (1e-3)."""
        # transformers' init functions leave tensors already loaded from a checkpoint untouched.
        bound = 1.0 / math.sqrt(self.experts_a.shape[-1])  # kaiming_uniform(a=sqrt(5)) on each (m, r) matrix
        init.uniform_(self.experts_a, -bound, bound)
        init.zeros_(self.experts_b)
        init.zeros_(self.gate_prototypes)
        init.zeros_(self.noise_weights)
        reset_token_linears(self.token2feat, self.delta_f, self.transform, self.merge)
        init.constant_(self.scale, self.scale_init)

    def no_weight_decay(self) -> set[str]:
        """Expert token factors, routers and the residual scale train without weight decay (authors' recipe)."""
        return {"experts_a", "experts_b", "gate_prototypes", "noise_weights", "scale"}

    def query_embeddings(self) -> torch.Tensor:
        """Mask2Former query position embedding from the expert tokens (mean over experts per layer), shape (m, Q)."""
        per_layer = (self.experts_a @ self.experts_b).mean(1)  # (L, m, D): mean over experts
        return pooled_query_embeddings(per_layer, self.transform, self.merge)

    def forward(
        self,
        hidden_states: torch.Tensor,
        layer_idx: int,
        depth_hidden_states: torch.Tensor | None = None,
        *,
        grid_size: tuple[int, int],
        output_router_probs: bool = False,
    ) -> AdapterOutput:
        """Adapts the visual patch tokens after layer `layer_idx`.

        Args:
            hidden_states (`torch.FloatTensor` of shape `(B, N, D)`): visual patch tokens.
            layer_idx (`int`): 0-based layer index.
            depth_hidden_states (`torch.FloatTensor` of shape `(B, N, D)`, *optional*): depth patch tokens at the same
                grid positions; ignored (may be `None`) when `fusion="none"`.
            grid_size (`tuple[int, int]`): the patch grid (h, w), h * w = N (unused: the method is per token).
            output_router_probs (`bool`): also return `(visual_gates, depth_gates)`, each (B, N, E).

        Returns:
            [`AdapterOutput`]: the adapted patch tokens (B, N, D) and this layer's load-balancing loss (scalar).
        """
        visual = hidden_states
        batch_size, num_patches, hidden_size = visual.shape
        modalities = [visual]
        if self.uses_depth:
            modalities.append(check_depth_tokens(depth_hidden_states, visual))
        flat = [tokens.reshape(-1, hidden_size) for tokens in modalities]
        routings = [self._route(tokens, layer_idx, modality) for modality, tokens in enumerate(flat)]
        coefficients = self._expert_coefficients(torch.cat(flat), routings, layer_idx)
        coefficients = coefficients.view(len(flat), batch_size, num_patches, -1)
        basis = self.adjustment_basis(layer_idx)
        fused = self._fuse(coefficients[VISUAL], coefficients[DEPTH] if len(flat) > 1 else None, basis) @ basis
        visual = visual + self.scale * self.delta_f(fused + visual)
        router_probs = None
        if output_router_probs:
            gates = [routing.gates.view(batch_size, num_patches, -1) for routing in routings]
            router_probs = (gates[VISUAL], gates[DEPTH] if len(gates) > 1 else None)
        return self.output(visual, load_balancing_loss(routings, self.aux_loss_coef), router_probs)

    def _route(self, tokens: torch.Tensor, layer_idx: int, modality: int) -> RoutingResult:
        router = 0 if self.gate_prototypes.shape[1] == 1 else modality
        return route(
            tokens,
            self.gate_prototypes[layer_idx, router],
            self.noise_weights[layer_idx, router],
            self.top_k,
            self.gating,
            add_noise=self.noisy_gating and self.training,
        )

    def adjustment_basis(self, layer_idx: int) -> torch.Tensor:
        """Basis of every expert adjustment of one layer, shape (E * r + 1, D).

        An adjustment is `Σ_{j≥1} S_j token2feat(T_e[j])` with `T_e = A_e @ B_e`, so it equals
        `(S[1:] @ A_e[1:]) @ (B_e W^T) + (Σ_{j≥1} S_j) b` for token2feat's weight W and bias b: a combination of the
        r rows of `B_e W^T` of each expert and of b. Working with these E * r + 1 coefficients instead of
        D-dimensional vectors makes the experts and both fusions cheaper by about D / (E * r + 1), exactly.
        """
        directions = self.experts_b[layer_idx].flatten(0, 1) @ self.token2feat.weight.t()  # (E * r, D)
        return torch.cat([directions, self.token2feat.bias.unsqueeze(0)])

    def _expert_coefficients(self, tokens: torch.Tensor, routings: list[RoutingResult], layer_idx: int) -> torch.Tensor:
        """Gate-weighted expert adjustments of eqs. 3-5 for tokens (T, D) of all modalities, as coefficients on
        `adjustment_basis(layer_idx)`, shape (T, E * r + 1).

        Token slots are sorted by expert once, so each expert scores only its own contiguous block of tokens: no
        per-token copy of an expert bank is made, the cost is that of k experts per token (not E), and one gather plus
        one inverse gather replace per-expert scatters (whose backward zero-fills a (T, D) tensor each).
        """
        experts_a, experts_b = self.experts_a[layer_idx], self.experts_b[layer_idx]  # (E, m, r), (E, r, D)
        expert_ids = torch.cat([routing.top_k_indices for routing in routings]).reshape(-1)  # (T * k,)
        order = expert_ids.argsort(stable=True)
        counts = torch.bincount(expert_ids, minlength=self.num_experts).tolist()
        # index_select: its backward is an index_add, much cheaper than advanced indexing's accumulating index_put.
        sorted_tokens = tokens.index_select(0, order // self.top_k)
        blocks = []
        for expert, routed in enumerate(sorted_tokens.split(counts)):
            scores = self._perceptual_scores(routed, experts_a[expert], experts_b[expert])
            weights = torch.softmax(scores, dim=-1)[:, 1:]  # token 0 is the "no change" slot
            on_directions = F.pad(weights @ experts_a[expert, 1:], (expert * self.expert_rank, 0))
            on_directions = F.pad(on_directions, (0, (self.num_experts - expert - 1) * self.expert_rank))
            blocks.append(torch.cat([on_directions, weights.sum(-1, keepdim=True)], dim=-1))
        slot_coefficients = torch.cat(blocks).index_select(0, order.argsort())  # back to (token, slot) order
        if self.top_k == 1:  # the single gate is exactly 1 with zero gradient: skip a pass
            return slot_coefficients
        gate_values = torch.cat([routing.top_k_gates for routing in routings]).reshape(-1, 1)
        slot_coefficients = slot_coefficients * gate_values.to(slot_coefficients.dtype)
        return slot_coefficients.view(tokens.shape[0], self.top_k, -1).sum(1)

    def _perceptual_scores(self, tokens: torch.Tensor, factor_a: torch.Tensor, factor_b: torch.Tensor) -> torch.Tensor:
        """Scores of tokens (n, D) against one expert's bank `A @ B` (m, D), scaled by 1/sqrt(D), shape (n, m)."""
        if self.perceptual_map == "dot_product":
            scores = F.linear(F.linear(tokens, factor_b), factor_a)  # (x B^T) A^T, never forming the bank
        else:  # the released einsum "bc,td->bt" sums each index separately: a product of row sums
            scores = tokens.sum(-1, keepdim=True) * (factor_a @ factor_b.sum(-1)).unsqueeze(0)
        return scores / math.sqrt(self.hidden_size)

    def _fuse(self, visual: torch.Tensor, depth: torch.Tensor | None, basis: torch.Tensor) -> torch.Tensor:
        """Fusion of eq. 6 on adjustment coefficients of shape (B, N, K); dot products of adjustments go through the
        basis' Gram matrix."""
        if self.fusion == "none":
            return visual
        if self.fusion == "add":
            return visual + depth
        scale = 1.0 / math.sqrt(self.hidden_size)
        gram = basis @ basis.t()  # (K, K)
        if self.fusion == "cross_attention":
            return F.scaled_dot_product_attention(visual @ gram, depth, depth, scale=scale)
        # official_diagonal: A[n, m] = softmax_m(d_n . v_m / sqrt(D)); only A[n, n] rescales v_n.
        depth_in_gram = depth @ gram
        log_normaliser = torch.logsumexp((depth_in_gram @ visual.transpose(1, 2)) * scale, dim=-1)
        diagonal = (depth_in_gram * visual).sum(-1) * scale
        return torch.exp(diagonal - log_normaliser).unsqueeze(-1) * visual
