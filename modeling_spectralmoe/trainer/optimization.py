"""The optimisation recipe of the paper (arXiv 2603.13352) and the authors' configs: AdamW with selective weight
decay and a poly schedule without warm-up."""

import torch
from accelerate.utils import extract_model_from_parallel
from torch import nn


NORM_LAYERS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
# Adapter parameters that the authors' config exempts from weight decay: expert token factors, routers, scale (and
# the token factors of the Rein / DepthForge baselines).
ADAPTER_NO_DECAY = ("experts_a", "experts_b", "gate_prototypes", "noise_weights", "scale", "tokens_a", "tokens_b")
# Learned embeddings of the decoder: query features and level embeddings (the query positions come from the adapter).
EMBEDDING_NO_DECAY = ("queries_features", "query_feat", "level_embed", "query_position")


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Names of the trainable parameters that get no weight decay: expert token factors, gate and noise weights, the
    adapter scale, every normalisation layer's weight and bias, and the decoder's query and level embeddings."""
    names = set()
    for module_name, module in model.named_modules():
        for parameter_name, parameter in module.named_parameters(recurse=False):
            full_name = f"{module_name}.{parameter_name}" if module_name else parameter_name
            if not parameter.requires_grad:
                continue
            is_adapter_factor = full_name.startswith("adapter.") and parameter_name in ADAPTER_NO_DECAY
            is_embedding = any(part in full_name.split(".") for part in EMBEDDING_NO_DECAY)
            if isinstance(module, NORM_LAYERS) or is_adapter_factor or is_embedding:
                names.add(full_name)
    return names


def build_optimizer(
    model: nn.Module, learning_rate: float = 1e-4, weight_decay: float = 0.05, betas=(0.9, 0.999)
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; those the model exempts from weight decay get none. `model` may be wrapped
    by accelerate / DDP: names are those of the model itself."""
    model = extract_model_from_parallel(model)
    exempt = no_weight_decay_names(model)  # TODO(merge): replace by model.no_weight_decay()
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
