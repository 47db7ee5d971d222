"""VPT-deep (Jia et al., ECCV 2022): learned prompt tokens fed to each frozen layer and dropped after it."""

import math

import torch
from torch import nn
from transformers import initialization as init

from .frozen_baseline_adapter import LearnedQueryAdapter


class VPTAdapter(LearnedQueryAdapter):
    r"""
    Before layer `l` the sequence becomes `[prefix, P[l], patches]`; after it the prompt outputs are dropped, so every
    layer sees its own prompts and the encoder's sequence length is unchanged. Prompts sit after the prefix tokens
    and before the patches: DINOv3 and EVA02 apply RoPE to the last N tokens only, so prompts get none (placing them
    after the patches would misapply it); DOFA's absolute positions were added before layer 0. Attached with forward
    hooks on the frozen layers. Rein's VPT baseline uses 150 prompts in every layer; they are initialised U(-v, v),
    `v = sqrt(6 / (3 p^2 + D))` (VPT's code). The decoder gets a learned query table.

    Args:
        num_layers (`int`), hidden_size (`int`): the host ViT's depth (L) and width (D).
        num_queries (`int`), query_dim (`int`): the learned query table.
        num_prompts (`int`, defaults to 150): prompts per layer (p).
        patch_size (`int`, defaults to 16): enters the initialisation bound only.
    """

    def __init__(self, num_layers: int, hidden_size: int, num_queries: int, query_dim: int, num_prompts: int = 150,
                 patch_size: int = 16):
        super().__init__(num_queries, query_dim)
        self.patch_size = patch_size
        self.prompts = nn.Parameter(torch.empty(num_layers, num_prompts, hidden_size))
        self.reset_parameters()

    @classmethod
    def from_config(cls, config) -> "VPTAdapter":
        backbone = config.backbone_config
        return cls(backbone.num_hidden_layers, backbone.hidden_size, config.num_queries, config.decoder_hidden_dim,
                   config.vpt_num_prompts, backbone.patch_size)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        super().reset_parameters()
        bound = math.sqrt(6.0 / (3 * self.patch_size**2 + self.prompts.shape[-1]))
        init.uniform_(self.prompts, -bound, bound)

    def no_weight_decay(self) -> set[str]:
        return {"query_position", "prompts"}

    def with_prompts(self, index: int, hidden_states: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
        """`[prefix, P[index], patches]` for tokens `[prefix, patches]`."""
        prompts = self.prompts[index].to(hidden_states.dtype).expand(hidden_states.shape[0], -1, -1)
        return torch.cat([hidden_states[:, :num_prefix_tokens], prompts, hidden_states[:, num_prefix_tokens:]], 1)

    def without_prompts(self, hidden_states: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
        prompt_end = num_prefix_tokens + self.prompts.shape[1]
        return torch.cat([hidden_states[:, :num_prefix_tokens], hidden_states[:, prompt_end:]], dim=1)

    def attach(self, encoder) -> None:
        if encoder.extra_tokens_refusal:
            raise ValueError(
                f"VPT inserts prompt tokens into each layer's token sequence, which {type(encoder).__name__} cannot "
                f"take: {encoder.extra_tokens_refusal}. Use another adapter type on this encoder."
            )
        prefix = encoder.num_prefix_tokens
        for index, layer in enumerate(encoder.layers):
            self.keep_hook(layer.register_forward_pre_hook(
                lambda module, args, kwargs, i=index: ((self.with_prompts(i, args[0], prefix), *args[1:]), kwargs),
                with_kwargs=True,
            ))
            self.keep_hook(layer.register_forward_hook(
                lambda module, args, output: self.without_prompts(output, prefix)
            ))


__all__ = ["VPTAdapter"]
