"""The optimisation recipe of the paper (arXiv 2603.13352) and the authors' configs: AdamW with selective weight
decay and a poly schedule without warm-up."""

import torch
from accelerate.utils import extract_model_from_parallel
from torch import nn


def build_optimizer(
    model: nn.Module, learning_rate: float = 1e-4, weight_decay: float = 0.05, betas=(0.9, 0.999)
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; those the model's modules declare (`model.no_weight_decay()`: expert
    token factors, routers, the residual scale, normalisation layers, query and level embeddings) get no decay.
    `model` may be wrapped by accelerate / DDP: names are those of the model itself."""
    model = extract_model_from_parallel(model)
    exempt = model.no_weight_decay()
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for name, p in trainable if name not in exempt], "weight_decay": weight_decay},
        {"params": [p for name, p in trainable if name in exempt], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=tuple(betas))


def poly_schedule(optimizer: torch.optim.Optimizer, total_steps: int, power: float = 0.9):
    """Learning rate `lr * (1 - step / total_steps) ** power`, reaching 0 at the end, no warm-up."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1.0 - step / max(1, total_steps)) ** power
    )
