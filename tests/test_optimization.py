"""The optimizer recipe: which trainable parameters get weight decay (the paper's authors' configs), and that frozen
parameters are in no group."""

from torch import nn

from modeling_spectralmoe import SpectralMoEForSemanticSegmentation
from modeling_spectralmoe.trainer.optimization import build_optimizer

from .conftest import tiny_config


def test_no_weight_decay_group_is_exactly_the_recipe(tiny_encoders):
    model = SpectralMoEForSemanticSegmentation(tiny_config(*tiny_encoders))
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    # Issue 4, item 2: expert token factors, gate and noise weights, the adapter scale, ...
    expected = {f"adapter.{name}" for name in ("experts_a", "experts_b", "gate_prototypes", "noise_weights", "scale")}
    # ... every normalisation layer's weight and bias (LayerNorm, GroupNorm, or any other *Norm module) ...
    norm_modules = 0
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or type(module).__name__.endswith("Norm"):
            names = {f"{module_name}.{name}" for name, _ in module.named_parameters(recurse=False)} & trainable
            norm_modules += bool(names)
            expected |= names
    # ... the decoder's query features and the level embeddings of the pixel decoder and the transformer decoder.
    expected |= {
        "decode_head.transformer_module.queries_features.weight",
        "decode_head.transformer_module.level_embed.weight",
        "decode_head.pixel_decoder.level_embed",
    }
    # The query *position* embedding has no parameter of its own: it is computed from the expert tokens (exempt above).
    assert not any("queries_embedder" in name or "query_position" in name for name in trainable)
    assert norm_modules >= 10  # the pixel decoder's GroupNorms and LayerNorms, the decoder's LayerNorms
    assert expected <= trainable  # frozen encoders' norms are not optimised at all

    # Everything else that trains decays; frozen parameters are in no group.
    optimizer = build_optimizer(model, learning_rate=1e-4, weight_decay=0.05)
    by_id = {id(parameter): name for name, parameter in model.named_parameters()}
    groups = {group["weight_decay"]: {by_id[id(p)] for p in group["params"]} for group in optimizer.param_groups}
    assert groups == {0.05: trainable - expected, 0.0: expected}
    assert {"adapter.token2feat.weight", "adapter.merge.weight", "decode_head.class_predictor.weight"} <= groups[0.05]


def test_optimizer_of_a_wrapped_model_uses_the_models_own_names(tiny_encoders):
    """Under DDP the parameter names gain a `module.` prefix; the exemptions are the model's, so it is unwrapped."""
    model = SpectralMoEForSemanticSegmentation(tiny_config(*tiny_encoders))
    plain = build_optimizer(model).param_groups
    wrapped = build_optimizer(nn.DataParallel(model)).param_groups  # no GPU: a plain wrapper around the module
    assert [[id(p) for p in group["params"]] for group in wrapped] == [[id(p) for p in group["params"]] for group in plain]
    assert len(wrapped[1]["params"]) > 0
