"""SET (Yi et al., ACM MM 2024) as a plug-in: Rein-style tokens applied to the phase and the amplitude of a Fourier
transform of the patch tokens, reproducing the official code (`JingjunYi/SET`, class `LoRAReins`).

The official code takes the FFT over the **batch and channel** axes of the sequence-first tokens (N, B, D), one token
position at a time, not over space: an image's adjustment depends on the other images of its batch (an image alone
gets a different one). That is what produced the published numbers, so it is reproduced as is; evaluation of a
batch-mixing method must fix and record its batch size.
"""

import math

import torch
from torch import nn
from transformers import initialization as init

from .adapter_layers import (
    official_token_bound, pooled_query_embeddings, rein_family_sizes, reset_token_linears, token_bank_update,
)
from .adapter_protocol import TokenAdapter

# The official code raises |values| below this to +1e-5 before the square root (amplitude) and atan2 (phase).
SPECTRUM_FLOOR = 1e-5


def _floor(values: torch.Tensor) -> torch.Tensor:
    """Values in the open interval (-1e-5, 1e-5) become +1e-5, as in the official code."""
    return torch.where(values.abs() < SPECTRUM_FLOOR, torch.full_like(values, SPECTRUM_FLOOR), values)


class SETAdapter(TokenAdapter):
    r"""
    SET for all `num_layers` layers of a frozen ViT. After layer `l`, with the patch tokens sequence-first `F`
    (N, B, D):

    1. `Z = fft2(F)` over (batch, channel); amplitude `A = sqrt(floor(Re^2 + Im^2))`, phase `P = atan2(Im, floor(Re))`;
    2. phase branch: Rein's token attention of `P` on the low-rank tokens `T1[l] = A1 @ B1`;
    3. amplitude branch: the same on `A` with the full-rank tokens `T2[l]`, scores instance-normalised;
    4. `delta = irfft2((cos dP, sin dP) * dA / sqrt(2D), s=(B, D), norm="ortho")`; output `F + s * delta`.

    The query position embedding is Rein's link on the phase tokens. No depth, no auxiliary loss.

    Args:
        num_layers (`int`): layers of the host ViT (L).
        hidden_size (`int`): token width (D).
        num_tokens (`int`, defaults to 100): tokens per layer and branch (m), also the decoder's query count.
        token_rank (`int`, defaults to 16): rank r of the phase tokens.
        query_dim (`int`, defaults to 256): width of the query position embedding (Q).
        patch_size (`int`, defaults to 16): enters the official initialisation bound only.
        scale_init (`float`, defaults to 1e-3): initial residual scale `s`.
    """

    def __init__(self, num_layers: int, hidden_size: int, num_tokens: int = 100, token_rank: int = 16,
                 query_dim: int = 256, patch_size: int = 16, scale_init: float = 1e-3):
        super().__init__()
        self.num_layers, self.hidden_size, self.token_rank = num_layers, hidden_size, token_rank
        self.patch_size, self.scale_init = patch_size, scale_init
        self.tokens_a = nn.Parameter(torch.empty(num_layers, num_tokens, token_rank))
        self.tokens_b = nn.Parameter(torch.empty(num_layers, token_rank, hidden_size))
        self.amplitude_tokens = nn.Parameter(torch.empty(num_layers, num_tokens, hidden_size))
        self.token2feat = nn.Linear(hidden_size, hidden_size)
        self.delta_f = nn.Linear(hidden_size, hidden_size)
        self.amplitude_token2feat = nn.Linear(hidden_size, hidden_size)
        self.amplitude_delta_f = nn.Linear(hidden_size, hidden_size)
        self.scale = nn.Parameter(torch.empty(()))
        self.transform = nn.Linear(hidden_size, query_dim)
        self.merge = nn.Linear(3 * query_dim, query_dim)
        self.reset_parameters()

    @classmethod
    def from_config(cls, config) -> "SETAdapter":
        return cls(**rein_family_sizes(config))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The official initialisation: both phase-token factors and the amplitude tokens uniform (bounds of
        `official_token_bound`), Linear layers PyTorch's default, scale `scale_init`."""
        factor_bound = official_token_bound(self.patch_size, math.sqrt(self.hidden_size * self.token_rank))
        init.uniform_(self.tokens_a, -factor_bound, factor_bound)
        init.uniform_(self.tokens_b, -factor_bound, factor_bound)
        bound = official_token_bound(self.patch_size, self.hidden_size)
        init.uniform_(self.amplitude_tokens, -bound, bound)
        reset_token_linears(self.token2feat, self.delta_f, self.amplitude_token2feat, self.amplitude_delta_f,
                            self.transform, self.merge)
        init.constant_(self.scale, self.scale_init)

    def no_weight_decay(self) -> set[str]:
        """The official configs exempt every `learnable_tokens*` and the scale."""
        return {"tokens_a", "tokens_b", "amplitude_tokens", "scale"}

    def phase_tokens(self) -> torch.Tensor:
        """Every layer's phase tokens `A1 @ B1`, shape (L, m, D)."""
        return self.tokens_a @ self.tokens_b

    def query_embeddings(self) -> torch.Tensor:
        return pooled_query_embeddings(self.phase_tokens(), self.transform, self.merge)

    def spectrum(self, sequence_first: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Amplitude and phase (N, B, D) of the FFT over (batch, channel) of tokens (N, B, D)."""
        spectrum = torch.fft.fft2(sequence_first.float())
        amplitude = torch.sqrt(_floor(spectrum.real**2 + spectrum.imag**2))
        phase = torch.atan2(spectrum.imag, _floor(spectrum.real))
        return amplitude, phase

    def branch_deltas(self, amplitude, phase, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The phase and amplitude adjustments (N, B, D) of layer `layer_idx`."""
        score_scale = math.sqrt(self.hidden_size)
        delta_phase = token_bank_update(phase, self.phase_tokens()[layer_idx], self.token2feat, self.delta_f,
                                        score_scale)
        delta_amplitude = token_bank_update(amplitude, self.amplitude_tokens[layer_idx], self.amplitude_token2feat,
                                            self.amplitude_delta_f, score_scale, normalise_scores=True)
        return delta_phase, delta_amplitude

    def forward(self, hidden_states, layer_idx, depth_hidden_states=None, *, grid_size, output_router_probs=False):
        """Adapts the patch tokens (B, N, D) after layer `layer_idx`; depth is not used, nothing is routed."""
        sequence_first = hidden_states.transpose(0, 1)
        amplitude, phase = self.spectrum(sequence_first)
        delta_phase, delta_amplitude = self.branch_deltas(amplitude, phase, layer_idx)
        batch_size = sequence_first.shape[1]
        recomposed = torch.complex(torch.cos(delta_phase) * delta_amplitude, torch.sin(delta_phase) * delta_amplitude)
        recomposed = recomposed / math.sqrt(2 * self.hidden_size)
        delta = torch.fft.irfft2(recomposed, s=(batch_size, self.hidden_size), norm="ortho")
        adapted = sequence_first + self.scale * delta.to(sequence_first.dtype)
        return self.output(adapted.transpose(0, 1))


__all__ = ["SETAdapter"]
