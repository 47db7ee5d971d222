"""AdaptFormer (Chen et al., NeurIPS 2022), official "parallel" form: a bottleneck MLP beside each frozen layer's MLP,
reading the post-attention residual stream."""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from .frozen_baseline_adapter import LearnedQueryAdapter


class AdaptFormerAdapter(LearnedQueryAdapter):
    r"""
    In layer `l`, with `x_mid` the stream after the attention residual:
    `x_out = x_mid + LS2(MLP(LN2(x_mid))) + s * (W_up dropout(ReLU(W_down x_mid + b_down)) + b_up)`.

    The branch is added after the layer scale LS2 of DINOv3 (so the scale does not shrink it; AdaptFormer's own ViT
    has none) and after the MLP of DOFA. It is attached with forward hooks on the layer's MLP branch (the encoder
    wrapper's `mlp_branch`), so the frozen layers run unchanged. Official defaults: bottleneck 64, fixed scale 0.1,
    dropout 0.1, `W_down` kaiming-uniform and the rest zero (the model starts as the frozen one). The decoder gets
    a learned query table.

    Args:
        num_layers (`int`), hidden_size (`int`): the host ViT's depth (L) and width (D).
        num_queries (`int`), query_dim (`int`): the learned query table.
        bottleneck (`int`, defaults to 64), scale (`float`, defaults to 0.1), dropout (`float`, defaults to 0.1).
    """

    def __init__(self, num_layers: int, hidden_size: int, num_queries: int, query_dim: int, bottleneck: int = 64,
                 scale: float = 0.1, dropout: float = 0.1):
        super().__init__(num_queries, query_dim)
        self.scale, self.dropout = scale, dropout
        self.down = nn.ModuleList(nn.Linear(hidden_size, bottleneck) for _ in range(num_layers))
        self.up = nn.ModuleList(nn.Linear(bottleneck, hidden_size) for _ in range(num_layers))
        self._branch_inputs = {}
        self.reset_parameters()

    @classmethod
    def from_config(cls, config) -> "AdaptFormerAdapter":
        return cls(config.backbone_config.num_hidden_layers, config.backbone_config.hidden_size, config.num_queries,
                   config.decoder_hidden_dim, config.adaptformer_bottleneck, config.adaptformer_scale,
                   config.adaptformer_dropout)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        super().reset_parameters()
        for down, up in zip(self.down, self.up):
            init.kaiming_uniform_(down.weight, a=math.sqrt(5))
            init.zeros_(down.bias)
            init.zeros_(up.weight)
            init.zeros_(up.bias)

    def branch(self, index: int, hidden_states: torch.Tensor) -> torch.Tensor:
        """`s * (W_up dropout(ReLU(W_down x + b_down)) + b_up)` of layer `index`."""
        hidden = F.dropout(F.relu(self.down[index](hidden_states)), self.dropout, self.training)
        return self.scale * self.up[index](hidden)

    def attach(self, encoder) -> None:
        for index in range(len(encoder.layers)):
            start, end = encoder.mlp_branch(index)
            self.keep_hook(start.register_forward_pre_hook(
                lambda module, args, i=index: self._branch_inputs.__setitem__(i, args[0])
            ))
            self.keep_hook(end.register_forward_hook(
                lambda module, args, output, i=index: output + self.branch(i, self._branch_inputs.pop(i))
            ))


__all__ = ["AdaptFormerAdapter"]
