"""The baselines of the paper's Table 2 as plug-ins with `SpectralMoEAdapter`'s interface: Rein (Wei et al., CVPR 2024)
and DepthForge (Rein whose token scores also take the depth tokens')."""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from .adapter_layers import depth_patches, pooled_query_embeddings, reset_token_linears


class ReinAdapter(nn.Module):
    r"""
    Rein for all `num_layers` layers of a frozen ViT: one low-rank token bank `T[l] = A[l] @ B[l]` (m, D) per layer.
    After layer `l` each visual patch token `x` becomes

        `x + s * delta_f(softmax(x T[l]^T / sqrt(D))[1:] @ token2feat(T[l][1:]) + x)`

    (the softmax runs over all m tokens, then token 0, the "no change" slot, is dropped). With `depth_guided=True`
    (DepthForge) the scores `d T[l]^T / sqrt(D)` of the depth patch token `d` at the same grid position are added to
    the visual scores before the softmax. Prefix tokens (cls, registers) pass through unchanged. There is no routing:
    the auxiliary loss is zero.

    The call interface is `SpectralMoEAdapter`'s, so either plugs into the model unchanged.

    Args:
        num_layers (`int`): layers of the host ViT (L).
        hidden_size (`int`): token width of the host ViT (and of the depth encoder for DepthForge) (D).
        num_tokens (`int`, defaults to 100): tokens per layer (m), also the decoder's query count.
        token_rank (`int`, defaults to 16): rank r of each layer's tokens `A @ B`.
        query_dim (`int`, defaults to 256): width of the query position embedding (Q).
        depth_guided (`bool`, defaults to `False`): DepthForge instead of Rein.
        scale_init (`float`, defaults to 1e-3): initial residual scale `s`.
    """

    def __init__(
        self,
        num_layers: int,
        hidden_size: int,
        num_tokens: int = 100,
        token_rank: int = 16,
        query_dim: int = 256,
        depth_guided: bool = False,
        scale_init: float = 1e-3,
    ):
        super().__init__()
        self.num_layers, self.hidden_size = num_layers, hidden_size
        self.num_tokens, self.token_rank = num_tokens, token_rank
        self.depth_guided, self.scale_init = depth_guided, scale_init
        self.tokens_a = nn.Parameter(torch.empty(num_layers, num_tokens, token_rank))
        self.tokens_b = nn.Parameter(torch.empty(num_layers, token_rank, hidden_size))
        self.token2feat = nn.Linear(hidden_size, hidden_size)
        self.delta_f = nn.Linear(hidden_size, hidden_size)
        self.scale = nn.Parameter(torch.empty(()))
        self.transform = nn.Linear(hidden_size, query_dim)
        self.merge = nn.Linear(3 * query_dim, query_dim)
        self.reset_parameters()

    @classmethod
    def from_config(cls, config) -> "ReinAdapter":
        """Rein, or DepthForge when `config.adapter_type == "depthforge"`, sized from a `SpectralMoEConfig`."""
        return cls(
            num_layers=config.backbone_config.num_hidden_layers,
            hidden_size=config.backbone_config.hidden_size,
            num_tokens=config.num_expert_tokens,
            token_rank=config.expert_rank,
            query_dim=config.decoder_hidden_dim,
            depth_guided=getattr(config, "adapter_type", "rein") == "depthforge",
            scale_init=config.adapter_scale_init,
        )

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """`SpectralMoEAdapter`'s conventions: A kaiming-uniform per layer (fan-in r), B zero, Linear layers
        kaiming-uniform(a=sqrt(5)) with the default bias, scale `scale_init`."""
        # transformers' init functions leave tensors already loaded from a checkpoint untouched.
        bound = 1.0 / math.sqrt(self.token_rank)  # kaiming_uniform(a=sqrt(5)) on each (m, r) matrix
        init.uniform_(self.tokens_a, -bound, bound)
        init.zeros_(self.tokens_b)
        reset_token_linears(self.token2feat, self.delta_f, self.transform, self.merge)
        init.constant_(self.scale, self.scale_init)

    def tokens(self) -> torch.Tensor:
        """Every layer's token bank `A @ B`, shape (L, m, D)."""
        return self.tokens_a @ self.tokens_b

    def query_embeddings(self) -> torch.Tensor:
        """Mask2Former query position embedding from the token banks (SPEC §2, one bank per layer), shape (m, Q)."""
        return pooled_query_embeddings(self.tokens(), self.transform, self.merge)

    def forward(
        self,
        hidden_states: torch.Tensor,
        depth_hidden_states: torch.Tensor | None,
        layer_idx: int,
        num_prefix_tokens: int,
        depth_num_prefix_tokens: int = 1,
        return_router_probs: bool = False,
    ):
        """Adapts the visual patch tokens after layer `layer_idx`.

        Args:
            hidden_states (`torch.FloatTensor` of shape `(B, P + N, D)`): visual tokens, P prefix tokens first.
            depth_hidden_states (`torch.FloatTensor` of shape `(B, Pd + N, D)`, *optional*): depth tokens of the same
                layer; required by DepthForge, ignored (may be `None`) by Rein.
            layer_idx (`int`): 0-based layer index.
            num_prefix_tokens (`int`): P, e.g. 5 for DINOv3 (cls + 4 registers), 1 for DOFA.
            depth_num_prefix_tokens (`int`, defaults to 1): Pd, 1 for DINOv2 (cls).
            return_router_probs (`bool`): also return `(None, None)`: nothing is routed.

        Returns:
            `(hidden_states, aux_loss)` or `(hidden_states, aux_loss, (None, None))`: the adapted tokens (B, P + N, D)
            and a zero scalar (no load-balancing loss).
        """
        prefix, visual = hidden_states[:, :num_prefix_tokens], hidden_states[:, num_prefix_tokens:]
        scored = visual
        if self.depth_guided:
            # d T^T + x T^T = (x + d) T^T: the depth scores cost one addition.
            scored = visual + depth_patches(depth_hidden_states, depth_num_prefix_tokens, visual.shape)
        tokens_a, tokens_b = self.tokens_a[layer_idx], self.tokens_b[layer_idx]  # (m, r), (r, D)
        scores = F.linear(F.linear(scored, tokens_b), tokens_a) / math.sqrt(self.hidden_size)  # (x B^T) A^T
        weights = torch.softmax(scores, dim=-1)[..., 1:]  # token 0 is the "no change" slot
        coefficients = torch.cat([weights @ tokens_a[1:], weights.sum(-1, keepdim=True)], dim=-1)  # (B, N, r + 1)
        adjustment = coefficients @ self.adjustment_basis(layer_idx)  # = weights @ token2feat(T[1:])
        visual = visual + self.scale * self.delta_f(adjustment + visual)
        outputs = (torch.cat([prefix, visual], dim=1), hidden_states.new_zeros(()))
        return outputs + ((None, None),) if return_router_probs else outputs

    def adjustment_basis(self, layer_idx: int) -> torch.Tensor:
        """Basis of the layer's adjustments, shape (r + 1, D).

        `Σ_{j≥1} S_j token2feat(T[j])` with `T = A @ B` equals `(S[1:] @ A[1:]) @ (B W^T) + (Σ_{j≥1} S_j) b` for
        token2feat's weight W and bias b, exactly (linearity). Scores `(x B^T) A^T` and these r + 1 coefficients cost
        about (m + D) r per token instead of 2 m D, and the bank is never passed through token2feat (r D^2 instead of
        m D^2 per call); only the rounding order differs from the direct form.
        """
        directions = self.tokens_b[layer_idx] @ self.token2feat.weight.t()  # (r, D)
        return torch.cat([directions, self.token2feat.bias.unsqueeze(0)])

    def load_official_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Loads the authors' Rein (`LoRAReins`) or DepthForge (`DepthForgeReins`) weights under their key names
        (`learnable_tokens_a` (L, m, r), `learnable_tokens_b` (L, r, D), `mlp_token2feat.*`, `mlp_delta_f.*`,
        `scale`, `transform.*`, `merge.*`; without a module prefix).

        Raises:
            ValueError: naming every unknown key and every missing one, or a key whose shape does not fit.
        """
        converted = convert_official_rein_state_dict(state_dict)
        expected = self.state_dict()
        for theirs, ours in OFFICIAL_REIN_KEYS.items():
            if converted[ours].shape != expected[ours].shape:
                raise ValueError(
                    f"Official Rein weight {theirs!r} has shape {tuple(converted[ours].shape)}, this adapter expects "
                    f"{tuple(expected[ours].shape)} for {ours!r}."
                )
        self.load_state_dict(converted)


OFFICIAL_REIN_KEYS = {
    "learnable_tokens_a": "tokens_a",
    "learnable_tokens_b": "tokens_b",
    "scale": "scale",
    **{
        f"{theirs}.{part}": f"{ours}.{part}"
        for ours, theirs in (("token2feat", "mlp_token2feat"), ("delta_f", "mlp_delta_f"), ("transform", "transform"),
                             ("merge", "merge"))
        for part in ("weight", "bias")
    },
}


def convert_official_rein_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames the authors' Rein / DepthForge adapter weights to `ReinAdapter`'s parameter names.

    Raises:
        ValueError: naming every unknown key and every missing one.
    """
    unknown = sorted(set(state_dict) - set(OFFICIAL_REIN_KEYS))
    missing = sorted(set(OFFICIAL_REIN_KEYS) - set(state_dict))
    if unknown or missing:
        raise ValueError(
            f"Official Rein adapter state dict does not fit: unexpected keys {unknown}, missing keys {missing}."
        )
    converted = {ours: state_dict[theirs] for theirs, ours in OFFICIAL_REIN_KEYS.items()}
    if converted["scale"].numel() == 1:  # a 0-d scalar, or a (1,) one
        converted["scale"] = converted["scale"].reshape(())
    return converted
