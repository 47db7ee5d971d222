"""Maps the state dict of an mmdet/mmseg `Mask2FormerHead` (the authors' `decode_head.*`) onto
[`SpectralMoEMask2FormerHead`], whose pieces are transformers' Mask2Former modules.

Every source key ends up in the report as mapped or intentionally dropped; a key that is neither, or a weight the head
needs that the source lacks, raises a `ValueError` naming it. Block counts (levels, layers) are read from the source;
`head.load_state_dict(converted)` then checks them against the config.
"""

import re

import torch


# Source keys that carry no weight of the head, with the reason they are left out.
DROPPED = {
    r"query_embed\.weight": "learned query position embedding: SpectralMoE takes it from the adapter's expert tokens",
    r"loss_(cls|mask|dice)\..+": "loss buffer (class weights): rebuilt from the config",
}

# mmdet name -> ours, one table per repeated block; `{i}` is the block index. A tuple of targets means the source
# tensor is split into that many equal chunks along dim 0.
WEIGHT_BIAS = ("weight", "bias")
PIXEL_DECODER_INPUT_CONV = {
    "input_convs.{i}.conv.weight": "input_projections.{i}.0.weight",
    "input_convs.{i}.conv.bias": "input_projections.{i}.0.bias",
    "input_convs.{i}.gn.weight": "input_projections.{i}.1.weight",
    "input_convs.{i}.gn.bias": "input_projections.{i}.1.bias",
}
# mmdet applies lateral_convs[i] / output_convs[i] to input map i, which transformers' adapter_{i+1} / layer_{i+1}
# process; the FPN convolutions have no bias (they are followed by GroupNorm).
PIXEL_DECODER_FPN = {
    "lateral_convs.{i}.conv.weight": "adapter_{j}.0.weight",
    "lateral_convs.{i}.gn.weight": "adapter_{j}.1.weight",
    "lateral_convs.{i}.gn.bias": "adapter_{j}.1.bias",
    "output_convs.{i}.conv.weight": "layer_{j}.0.weight",
    "output_convs.{i}.gn.weight": "layer_{j}.1.weight",
    "output_convs.{i}.gn.bias": "layer_{j}.1.bias",
}
ENCODER_LAYER = {
    **{
        f"self_attn.{name}.{p}": f"self_attn.{name}.{p}"
        for name in ("sampling_offsets", "attention_weights", "value_proj", "output_proj")
        for p in WEIGHT_BIAS
    },
    **{f"ffn.layers.0.0.{p}": f"fc1.{p}" for p in WEIGHT_BIAS},
    **{f"ffn.layers.1.{p}": f"fc2.{p}" for p in WEIGHT_BIAS},
    **{f"norms.0.{p}": f"self_attn_layer_norm.{p}" for p in WEIGHT_BIAS},
    **{f"norms.1.{p}": f"final_layer_norm.{p}" for p in WEIGHT_BIAS},
}
# mmdet's decoder layer runs cross-attention, norms[0], self-attention, norms[1], FFN, norms[2] (post-norm), like
# transformers'. Its self-attention is torch's MultiheadAttention with packed q/k/v projections; transformers' has 3.
DECODER_LAYER = {
    "cross_attn.attn.in_proj_weight": "cross_attn.in_proj_weight",
    "cross_attn.attn.in_proj_bias": "cross_attn.in_proj_bias",
    **{f"self_attn.attn.in_proj_{p}": tuple(f"self_attn.{x}_proj.{p}" for x in "qkv") for p in WEIGHT_BIAS},
    **{
        f"{attn}.attn.out_proj.{p}": f"{attn}.out_proj.{p}"
        for attn in ("cross_attn", "self_attn")
        for p in WEIGHT_BIAS
    },
    **{f"ffn.layers.0.0.{p}": f"fc1.{p}" for p in WEIGHT_BIAS},
    **{f"ffn.layers.1.{p}": f"fc2.{p}" for p in WEIGHT_BIAS},
    **{f"norms.0.{p}": f"cross_attn_layer_norm.{p}" for p in WEIGHT_BIAS},
    **{f"norms.1.{p}": f"self_attn_layer_norm.{p}" for p in WEIGHT_BIAS},
    **{f"norms.2.{p}": f"final_layer_norm.{p}" for p in WEIGHT_BIAS},
}
# Only present when mmdet projects the pixel decoder's maps before the transformer decoder
# (`enforce_decoder_input_project=True`, or feature and decoder widths that differ).
DECODER_INPUT_PROJECTION = {f"decoder_input_projs.{{i}}.{p}": f"input_projections.{{i}}.{p}" for p in WEIGHT_BIAS}
SINGLE = {
    "pixel_decoder.level_encoding.weight": "pixel_decoder.level_embed",
    "pixel_decoder.mask_feature.weight": "pixel_decoder.mask_projection.weight",
    "pixel_decoder.mask_feature.bias": "pixel_decoder.mask_projection.bias",
    "query_feat.weight": "transformer_module.queries_features.weight",
    "level_embed.weight": "transformer_module.level_embed.weight",
    "transformer_decoder.post_norm.weight": "transformer_module.decoder.layernorm.weight",
    "transformer_decoder.post_norm.bias": "transformer_module.decoder.layernorm.bias",
    "cls_embed.weight": "class_predictor.weight",
    "cls_embed.bias": "class_predictor.bias",
    **{
        f"mask_embed.{2 * k}.{p}": f"transformer_module.decoder.mask_predictor.mask_embedder.{k}.0.{p}"
        for k in range(3)  # mmdet's Sequential interleaves the three Linear layers with ReLUs
        for p in WEIGHT_BIAS
    },
}
# (table, mmdet prefix, our prefix, fewest blocks a head has)
BLOCKS = (
    (PIXEL_DECODER_INPUT_CONV, "pixel_decoder.", "pixel_decoder.", 1),
    (PIXEL_DECODER_FPN, "pixel_decoder.", "pixel_decoder.", 1),
    (ENCODER_LAYER, "pixel_decoder.encoder.layers.{i}.", "pixel_decoder.encoder.layers.{i}.", 1),
    (DECODER_LAYER, "transformer_decoder.layers.{i}.", "transformer_module.decoder.layers.{i}.", 1),
    (DECODER_INPUT_PROJECTION, "", "transformer_module.", 0),
)


def _block_count(keys: set[str], source_keys: list[str], minimum: int) -> int:
    """1 + the largest block index found among `keys` for any of the block's `source_keys` (with `{i}`), at least
    `minimum`, so that a head lacking a block it always has reports that block's keys as missing."""
    patterns = [re.compile(re.escape(key).replace(r"\{i\}", r"(\d+)")) for key in source_keys]
    indices = [int(match.group(1)) for key in keys for pattern in patterns if (match := pattern.fullmatch(key))]
    return max([minimum - 1, *indices]) + 1


def _expected_mapping(keys: set[str]) -> dict[str, str | tuple[str, ...]]:
    """mmdet key -> our key(s) for every weight of a head with the source's block counts."""
    mapping: dict[str, str | tuple[str, ...]] = dict(SINGLE)
    for table, source_prefix, target_prefix, minimum in BLOCKS:
        for i in range(_block_count(keys, [source_prefix + key for key in table], minimum)):
            for source, target in table.items():
                targets = (target,) if isinstance(target, str) else target
                targets = tuple((target_prefix + name).format(i=i, j=i + 1) for name in targets)
                mapping[(source_prefix + source).format(i=i)] = targets[0] if isinstance(target, str) else targets
    return mapping


def convert_mmdet_mask2former_head(
    state_dict: dict[str, torch.Tensor], prefix: str = "decode_head."
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """
    Converts the mmdet/mmseg Mask2Former head weights found under `prefix` in `state_dict` to the state dict of
    [`SpectralMoEMask2FormerHead`]. Keys outside `prefix` are ignored, so a whole mmseg checkpoint can be passed.

    Args:
        state_dict (`dict[str, torch.Tensor]`): the source weights, e.g. an mmseg checkpoint's `state_dict`.
        prefix (`str`, *optional*, defaults to `"decode_head."`): where the head's keys start.

    Returns:
        `(head_state_dict, report)`: the weights for `head.load_state_dict(head_state_dict)`, and for every source key
        under `prefix` (full name) either `"mapped -> <our key(s)>"` or `"dropped: <reason>"`.

    Raises:
        `ValueError`: naming every source key that is neither mapped nor intentionally dropped (unexpected) and every
        weight of the head that the source lacks (missing).
    """
    source = {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
    mapping = _expected_mapping(set(source))
    converted: dict[str, torch.Tensor] = {}
    report: dict[str, str] = {}
    unexpected = []
    for key, value in sorted(source.items()):
        target = mapping.get(key)
        if isinstance(target, str):
            converted[target] = value
            report[prefix + key] = f"mapped -> {target}"
        elif target is not None:
            converted.update(zip(target, value.chunk(len(target), dim=0)))
            report[prefix + key] = "mapped -> " + ", ".join(target)
        elif reason := next((why for pattern, why in DROPPED.items() if re.fullmatch(pattern, key)), None):
            report[prefix + key] = f"dropped: {reason}"
        else:
            unexpected.append(prefix + key)
    missing = [prefix + key for key in sorted(mapping) if key not in source]
    if unexpected or missing:
        problems = [f"unexpected keys {unexpected}"] if unexpected else []
        problems += [f"missing keys {missing}"] if missing else []
        raise ValueError(f"Cannot convert the mmdet Mask2Former head under {prefix!r}: " + "; ".join(problems) + ".")
    return converted, report


__all__ = ["convert_mmdet_mask2former_head"]
