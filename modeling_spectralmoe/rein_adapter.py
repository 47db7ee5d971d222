"""The baselines of the paper's Table 2 as plug-ins with `SpectralMoEAdapter`'s interface: Rein (Wei et al., CVPR 2024)
and DepthForge (Rein whose token scores also take the depth tokens')."""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from .adapter_layers import pooled_query_embeddings, reset_token_linears
from .adapter_protocol import AdapterOutput, TokenAdapter, check_depth_tokens


class ReinAdapter(TokenAdapter):
    r"""
    Rein for all `num_layers` layers of a frozen ViT: one low-rank token bank `T[l] = A[l] @ B[l]` (m, D) per layer.
    After layer `l` each visual patch token `x` becomes

        `x + s * delta_f(softmax(x T[l]^T / sqrt(D))[1:] @ token2feat(T[l][1:]) + x)`

    (the softmax runs over all m tokens, then token 0, the "no change" slot, is dropped). With `depth_guided=True`
    (DepthForge) the scores `d T[l]^T / sqrt(D)` of the depth patch token `d` at the same grid position are added to
    the visual scores before the softmax. There is no routing: the auxiliary loss is zero.

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
        self.uses_depth = depth_guided
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
            num_layers=config.num_adapted_layers,
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

    def no_weight_decay(self) -> set[str]:
        return {"tokens_a", "tokens_b", "scale"}

    def query_embeddings(self) -> torch.Tensor:
        """Mask2Former query position embedding from the token banks (one bank per layer), shape (m, Q)."""
        return pooled_query_embeddings(self.tokens(), self.transform, self.merge)

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
                positions; required by DepthForge, ignored by Rein.
            grid_size (`tuple[int, int]`): the patch grid (unused: the method is per token).
            output_router_probs (`bool`): ignored: nothing is routed (`router_probs` is `None`).

        Returns:
            [`AdapterOutput`]: the adapted patch tokens (B, N, D) and a zero auxiliary loss.
        """
        visual = scored = hidden_states
        if self.depth_guided:
            # d T^T + x T^T = (x + d) T^T: the depth scores cost one addition.
            scored = visual + check_depth_tokens(depth_hidden_states, visual)
        tokens_a, tokens_b = self.tokens_a[layer_idx], self.tokens_b[layer_idx]  # (m, r), (r, D)
        scores = F.linear(F.linear(scored, tokens_b), tokens_a) / math.sqrt(self.hidden_size)  # (x B^T) A^T
        weights = torch.softmax(scores, dim=-1)[..., 1:]  # token 0 is the "no change" slot
        coefficients = torch.cat([weights @ tokens_a[1:], weights.sum(-1, keepdim=True)], dim=-1)  # (B, N, r + 1)
        adjustment = coefficients @ self.adjustment_basis(layer_idx)  # = weights @ token2feat(T[1:])
        return self.output(visual + self.scale * self.delta_f(adjustment + visual))

    def adjustment_basis(self, layer_idx: int) -> torch.Tensor:
        """Basis of the layer's adjustments, shape (r + 1, D).

        `Σ_{j≥1} S_j token2feat(T[j])` with `T = A @ B` equals `(S[1:] @ A[1:]) @ (B W^T) + (Σ_{j≥1} S_j) b` for
        token2feat's weight W and bias b, exactly (linearity). Scores `(x B^T) A^T` and these r + 1 coefficients cost
        about (m + D) r per token instead of 2 m D, and the bank is never passed through token2feat (r D^2 instead of
        m D^2 per call); only the rounding order differs from the direct form.
        """
        directions = self.tokens_b[layer_idx] @ self.token2feat.weight.t()  # (r, D)
        return torch.cat([directions, self.token2feat.bias.unsqueeze(0)])
