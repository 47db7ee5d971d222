"""Maps the authors' "converted backbone" file onto the model's frozen encoders.

The file (built by the authors' `convert_dinov3_depthmoe.py`) holds
- Meta's DINOv3 ViT under the names of `facebookresearch/dinov3`: `cls_token` (1, 1, D), `storage_tokens` (1, 4, D)
  (`register_tokens` accepted too), `mask_token` (1, D), `patch_embed.proj.*`, `blocks.{i}.norm1/norm2.*`,
  `blocks.{i}.attn.qkv.*` (fused q, k, v), `blocks.{i}.attn.qkv.bias_mask` (buffer zeroing the key bias),
  `blocks.{i}.attn.proj.*`, `blocks.{i}.ls1/ls2.gamma`, `blocks.{i}.mlp.fc1/fc2.*`, `norm.*` and
  `rope_embed.periods` (bfloat16 in Meta's files; kept as stored, see `DINOv3VisualEncoder`);
- the PromptDA model under `depth_anything.`: its DINOv2 encoder `depth_anything.pretrained.*` in the original DINOv2
  layout (`cls_token`, `mask_token`, `pos_embed`, `patch_embed.proj.*`, `blocks.{i}.*` named as above, `norm.*`),
  plus parts outside the encoder (`depth_head.*`, buffers) that SpectralMoE does not use.

Patch kernels are fitted to the model: a 3-band DINOv3 kernel is widened to the input bands (`patch_embed_expansion`;
the authors' "RGB" rule leaves it 3-band, their "MSI" rule widens it cyclically in the file, both are accepted) and a
14x14 depth kernel is resized to the visual patch size; kernels already in the target shape are kept.
"""

import re

import torch
from transformers import Dinov2Config

from ..encoder_key_maps import DINOV2_TOP_LEVEL, key_map_with_blocks, meta_vit_block_key_map, prefixed
from ..frozen_encoders import expand_patch_kernel, resample_patch_kernel

DEPTH_PREFIX = "depth_anything.pretrained."
DROPPED = {
    r"blocks\.\d+\.attn\.qkv\.bias_mask": "buffer zeroing DINOv3's key bias; the key bias is not loaded",
    r"depth_anything\.(?!pretrained\.).+": "PromptDA outside its DINOv2 encoder (depth head, buffers): SpectralMoE "
    "uses the encoder's tokens only",
}
KEY_BIAS_DROPPED = "key bias dropped: a bias shared by all keys cancels in the softmax"
ALIASES = {"register_tokens": "storage_tokens"}  # some DINOv3 ports rename Meta's storage tokens
DINOV2_PATCH_SIZE = 14  # every DINOv2 depth model (PromptDA, Depth Anything V2)
DINOV2_LAYER_NORM_EPS = 1e-6


def backbone_key_map(model) -> dict[str, str | tuple[str | None, ...]]:
    """Every key the converted-backbone file must hold -> the model's key(s), for the model's encoder depths."""
    visual_tokens = {
        "cls_token": "embeddings.cls_token",
        "storage_tokens": "embeddings.register_tokens",
        "mask_token": "embeddings.mask_token",
        "patch_embed.proj.weight": "embeddings.patch_embeddings.weight",
        "patch_embed.proj.bias": "embeddings.patch_embeddings.bias",
        "norm.weight": "norm.weight",
        "norm.bias": "norm.bias",
    }
    visual, depth = model.visual_encoder.model.config, model.depth_encoder.model.config
    encoders = [  # (source prefix, our prefix, our layer prefix, config, top-level names, MLP names, key bias)
        ("", "visual_encoder.model.", "model.layer.", visual, visual_tokens, ("up_proj", "down_proj"), visual.key_bias),
        (DEPTH_PREFIX, "depth_encoder.model.", "encoder.layer.", depth, DINOV2_TOP_LEVEL, ("fc1", "fc2"), True),
    ]
    key_map = {"rope_embed.periods": "visual_encoder.rope_periods"}
    for source_prefix, target_prefix, layer_prefix, config, tokens, mlp_names, key_bias in encoders:
        block = meta_vit_block_key_map(mlp_names, key_bias)
        targets = key_map_with_blocks(tokens, block, config.num_hidden_layers, "blocks.", layer_prefix)
        key_map.update({source_prefix + key: prefixed(target_prefix, value) for key, value in targets.items()})
    return key_map


def _fit(value: torch.Tensor, expected: torch.Tensor, expansion: str) -> tuple[torch.Tensor, str]:
    """Brings a source tensor to the expected shape where the conversion rules allow it, with a note of what was done:
    singleton dimensions (Meta's (1, D) mask token), an RGB patch kernel widened to the input bands, a patch kernel
    resampled to the target patch size. Other mismatches are left for the caller to report."""
    if value.shape == expected.shape:
        return value, ""
    notes = []
    if value.ndim == 4 and expected.ndim == 4:  # patch kernels (D, C, p, p)
        if value.shape[1] == 3 and expected.shape[1] != 3:
            value = expand_patch_kernel(value, expected.shape[1], expansion)
            notes.append(f"RGB kernel widened to {expected.shape[1]} bands ({expansion})")
        if value.shape[-2:] != expected.shape[-2:]:
            notes.append(f"{tuple(value.shape[-2:])} kernel resampled bicubically to {tuple(expected.shape[-2:])}")
            value = resample_patch_kernel(value, expected.shape[-1])
    elif [s for s in value.shape if s != 1] == [s for s in expected.shape if s != 1]:
        value = value.reshape(expected.shape)
        notes.append(f"reshaped to {tuple(expected.shape)}")
    return value, " (" + "; ".join(notes) + ")" if notes else ""


def _canonical_names(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, tuple[str, torch.Tensor]], list[str]]:
    """canonical name -> (key in the file, tensor), and the keys that spell one tensor twice."""
    source, duplicates = {}, []
    for key, value in state_dict.items():
        name = ALIASES.get(key, key)
        if name in source or (name != key and name in state_dict):
            duplicates.append(key)
        else:
            source[name] = (key, value)
    return source, duplicates


def convert_backbone_state_dict(state_dict: dict[str, torch.Tensor], model) -> tuple[dict[str, torch.Tensor], dict]:
    """Maps the converted-backbone file onto the model's `visual_encoder.*` (transformers' DINOv3ViTModel plus the
    wrapper's RoPE periods) and `depth_encoder.model.*` (Dinov2Model) weights.

    Args:
        state_dict (`dict[str, torch.Tensor]`): the file's tensors.
        model ([`SpectralMoEForSemanticSegmentation`]): gives the target names and shapes (may be on the meta device).

    Returns:
        `(weights, report)`: our keys -> tensors, and every source key -> `"mapped -> ..."` / `"dropped: <reason>"`.

    Raises:
        `ValueError`: naming every unknown key, every missing one and every tensor whose shape cannot be fitted.
    """
    if model.depth_encoder is None:
        raise ValueError("The converted backbone holds a depth encoder, but this config runs none (`fusion='none'`).")
    key_map, expected = backbone_key_map(model), model.state_dict()
    expansion = model.config.patch_embed_expansion
    source, unexpected = _canonical_names(state_dict)
    weights, report, mismatched = {}, {}, []
    for name, (key, value) in sorted(source.items()):
        target = key_map.get(name)
        if target is None:
            reason = next((why for pattern, why in DROPPED.items() if re.fullmatch(pattern, name)), None)
            if reason is None:
                unexpected.append(key)
            else:
                report[key] = f"dropped: {reason}"
            continue
        targets = (target,) if isinstance(target, str) else target
        parts = (value,) if isinstance(target, str) else value.chunk(len(target), dim=0)
        notes = ""
        for ours, part in zip(targets, parts):
            if ours is None:
                notes = f" ({KEY_BIAS_DROPPED})"
                continue
            weights[ours], note = _fit(part, expected[ours], expansion)
            notes += note
            if weights[ours].shape != expected[ours].shape:
                mismatched.append(f"{key} {tuple(part.shape)} -> {ours} {tuple(expected[ours].shape)}")
        report[key] = "mapped -> " + ", ".join(name for name in targets if name) + notes
    missing = sorted(key for key in key_map if key not in source)
    if unexpected or missing or mismatched:
        problems = [f"unexpected keys {unexpected}"] if unexpected else []
        problems += [f"missing keys {missing}"] if missing else []
        problems += [f"shapes that do not fit {mismatched}"] if mismatched else []
        raise ValueError("Cannot convert the backbone file: " + "; ".join(problems) + ".")
    return weights, report


def depth_encoder_config(state_dict: dict[str, torch.Tensor], num_attention_heads: int) -> Dinov2Config:
    """The DINOv2 depth encoder's architecture, read from the file's tensors: width (cls token), depth (blocks), MLP
    ratio (fc1) and the position table's grid. The head count is not in the tensors:
    it is the visual encoder's (the file pairs a DINOv3 with a DINOv2 of the same size, e.g. both ViT-L with 16)."""
    def tensor(name: str) -> torch.Tensor:
        if DEPTH_PREFIX + name not in state_dict:
            raise ValueError(f"The backbone file has no {DEPTH_PREFIX + name}: it holds no PromptDA DINOv2 encoder.")
        return state_dict[DEPTH_PREFIX + name]

    hidden_size = tensor("cls_token").shape[-1]
    blocks = {int(key.split(".")[3]) for key in state_dict if re.match(re.escape(DEPTH_PREFIX) + r"blocks\.\d+\.", key)}
    positions = tensor("pos_embed").shape[1] - 1
    grid = round(positions**0.5)
    if grid * grid != positions:
        raise ValueError(f"{DEPTH_PREFIX}pos_embed has {positions} positions, not a square grid.")
    return Dinov2Config(
        hidden_size=hidden_size,
        num_hidden_layers=len(blocks),
        num_attention_heads=num_attention_heads,
        mlp_ratio=tensor("blocks.0.mlp.fc1.weight").shape[0] // hidden_size,
        patch_size=DINOV2_PATCH_SIZE,
        image_size=grid * DINOV2_PATCH_SIZE,
        layer_norm_eps=DINOV2_LAYER_NORM_EPS,
    )


__all__ = ["backbone_key_map", "convert_backbone_state_dict", "depth_encoder_config"]
