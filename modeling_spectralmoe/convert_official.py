"""Converts the authors' released SpectralMoE checkpoint (mmseg format, Five-Billion-Pixels cross-sensor setting) and,
optionally, their "converted backbone" file into a [`SpectralMoEForSemanticSegmentation`] folder.

```bash
python -m modeling_spectralmoe.convert_official --checkpoint RELEASED.pth [--backbone CONVERTED.pth] --output-dir DIR
```

The released checkpoint holds the trained parts only: `backbone.depthmoe.*` (the adapter, authors' DepthMoE names, see
`golden/README.md`) and `decode_head.*` (an mmdet/mmseg Mask2Former head). They are mapped by the existing converters
(`convert_official_adapter_state_dict`, `convert_mmdet_mask2former_head`) onto a model built on the meta device, so
the ViT-L encoders are never materialised; without `--backbone` the folder holds the adapter and head, and
`from_pretrained` loads the encoders from the Hub checkpoints the config names.

The converted-backbone file (as the authors' instructions build it; no real file was available when this was written,
so its layout is assumed from the publishers' code and checked key by key) holds
- Meta's DINOv3 ViT under the names of `facebookresearch/dinov3`: `cls_token` (1, 1, D), `storage_tokens` (1, 4, D)
  (`register_tokens` accepted too), `mask_token` (1, D), `patch_embed.proj.*`, `blocks.{i}.norm1/norm2.*`,
  `blocks.{i}.attn.qkv.*` (fused q, k, v), `blocks.{i}.attn.qkv.bias_mask` (buffer zeroing the key bias),
  `blocks.{i}.attn.proj.*`, `blocks.{i}.ls1/ls2.gamma`, `blocks.{i}.mlp.fc1/fc2.*`, `norm.*`, `rope_embed.periods`;
- the Depth Anything / PromptDA model under `depth_anything.`: its DINOv2 encoder `depth_anything.pretrained.*` in the
  original DINOv2 layout (`cls_token`, `mask_token`, `pos_embed`, `patch_embed.proj.*`, unchunked `blocks.{i}.*` named
  as above, `norm.*`), plus parts outside the encoder (`depth_head.*`, ...) that SpectralMoE does not use.
The RGB patch kernel of DINOv3 is widened to the input bands (`patch_embed_expansion`, cyclic) and the depth encoder's
14x14 kernel is resized to 16x16 (`depth_grid_alignment="resample_patch_embed"`) when the file holds them unchanged,
exactly as the Hub-checkpoint loaders of `frozen_encoders.py` do; kernels already in the target shape are kept. The
depth position embedding is kept at the grid the file holds (e.g. one pre-interpolated to 32x32 for 512 crops): the
config's depth `image_size` follows it.
"""

import argparse
import copy
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers.models.dinov3_vit.modeling_dinov3_vit import DINOv3ViTRopePositionEmbedding

from .benchmarks import (
    FIVE_BILLION_PIXELS_BANDS, FIVE_BILLION_PIXELS_CLASSES, FIVE_BILLION_PIXELS_WAVELENGTHS_UM,
)
from .checkpoint_files import read_state_dict_file
from .configuration_spectralmoe import SpectralMoEConfig
from .convert_mmdet_head import convert_mmdet_mask2former_head
from .frozen_encoders import expand_patch_kernel, resample_patch_kernel
from .image_processing_spectralmoe import SpectralMoEImageProcessor
from .modeling_spectralmoe import FROZEN_PREFIXES, SpectralMoEForSemanticSegmentation
from .spectralmoe_adapter import convert_official_adapter_state_dict
from .training_utils.model_card import model_card


# SPEC §6, Five-Billion-Pixels cross-sensor (GF-2 source), per band N, R, G, B in 8-bit digital numbers.
FBP_CROSS_SENSOR_MEAN = [110.714, 85.357, 88.594, 82.444]
FBP_CROSS_SENSOR_STD = [72.380, 65.591, 63.937, 63.005]

# The released model: DINOv3-L + PromptDA-L on N-R-G-B GF-2 tiles, with both numerical quirks of the authors' code.
RELEASED_SETTINGS = dict(
    backbone="facebook/dinov3-vitl16-pretrain-lvd1689m",
    depth_backbone="depth-anything/prompt-depth-anything-vitl-hf",
    num_channels=4,
    band_names=list(FIVE_BILLION_PIXELS_BANDS),
    wavelengths=list(FIVE_BILLION_PIXELS_WAVELENGTHS_UM),
    depth_rgb_bands=[1, 2, 3],
    patch_embed_expansion="cyclic",
    depth_grid_alignment="resample_patch_embed",
    perceptual_map="official_sum_product",
    fusion="official_diagonal",
    num_experts=6,
    top_k=1,
    expert_rank=16,
    num_expert_tokens=100,
    num_queries=100,
    id2label=dict(enumerate(FIVE_BILLION_PIXELS_CLASSES)),
)

ADAPTER_PREFIX = "backbone.depthmoe."
HEAD_PREFIX = "decode_head."
DEPTH_PREFIX = "depth_anything.pretrained."
ADAPTER_DROPPED = dict.fromkeys(
    ("mean", "std"),
    "buffer of the authors' module (RGB statistics), not a trained weight: the depth encoder takes the "
    "dataset-normalised bands as they are (SPEC §3)",
)
BACKBONE_DROPPED = {
    r"blocks\.\d+\.attn\.qkv\.bias_mask": "buffer zeroing DINOv3's key bias; transformers' DINOv3 has no key bias",
    r"rope_embed\.periods": "RoPE periods, a buffer transformers recomputes from `rope_theta` (checked to agree)",
    r"depth_anything\.(?!pretrained\.).+": "Depth Anything outside its DINOv2 encoder (depth head, ...): SpectralMoE "
    "uses the encoder's tokens only (SPEC §3)",
}
KEY_BIAS_DROPPED = "key bias dropped: a bias shared by all keys cancels in the softmax"
BACKBONE_ALIASES = {"register_tokens": "storage_tokens"}  # some DINOv3 ports rename Meta's storage tokens


@dataclass
class ConversionReport:
    """What became of every key of the converted files.

    Args:
        output_dir (`str`): the written model folder.
        includes_encoders (`bool`): whether the folder holds the frozen encoders too (converted from `--backbone`).
        keys (`dict[str, dict[str, str]]`): per source file, every key -> `"mapped -> <ours>"` or `"dropped: <why>"`.
    """

    output_dir: str
    includes_encoders: bool
    keys: dict[str, dict[str, str]]

    def summary(self) -> str:
        """Key counts per file, each drop reason with an example key, and what the folder holds."""
        lines = []
        for path, entries in self.keys.items():
            dropped = defaultdict(list)
            for key, fate in entries.items():
                if fate.startswith("dropped: "):
                    dropped[fate[len("dropped: ") :]].append(key)
            num_dropped = sum(len(keys) for keys in dropped.values())
            lines.append(f"{path}: {len(entries)} keys, {len(entries) - num_dropped} mapped, {num_dropped} dropped")
            for reason, keys in dropped.items():
                alike = f" and {len(keys) - 1} alike" if len(keys) > 1 else ""
                lines.append(f"  dropped {keys[0]}{alike}: {reason}")
        contents = "the complete model" if self.includes_encoders else (
            "adapter + head; the encoders load from config.backbone / config.depth_backbone"
        )
        lines.append(f"Wrote {self.output_dir}: {contents}.")
        return "\n".join(lines)


def released_config(**overrides) -> SpectralMoEConfig:
    """The config of the released model (`RELEASED_SETTINGS`); `overrides` replace fields, e.g. sizes for tests."""
    return SpectralMoEConfig(**{**RELEASED_SETTINGS, **overrides})


def released_image_processor() -> SpectralMoEImageProcessor:
    """The processor of the released model: the Five-Billion-Pixels cross-sensor normalisation (SPEC §6)."""
    return SpectralMoEImageProcessor(image_mean=FBP_CROSS_SENSOR_MEAN, image_std=FBP_CROSS_SENSOR_STD)


def convert_released_state_dict(
    state_dict: dict[str, torch.Tensor], num_layers: int, num_experts: int, num_routers: int = 2
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Maps the released mmseg state dict onto our model's `adapter.*` and `decode_head.*` weights.

    Args:
        state_dict (`dict[str, torch.Tensor]`): the checkpoint's `state_dict`.
        num_layers, num_experts, num_routers (`int`): the adapter's sizes (see `convert_official_adapter_state_dict`).

    Returns:
        `(weights, report)`: our keys -> tensors, and every source key -> `"mapped -> ..."` / `"dropped: <reason>"`.

    Raises:
        `ValueError`: naming every key outside the two parts, and the unknown or missing keys of each part.
    """
    problems = []
    unexpected = sorted(key for key in state_dict if not key.startswith((ADAPTER_PREFIX, HEAD_PREFIX)))
    if unexpected:
        problems.append(f"unexpected keys {unexpected} (neither {ADAPTER_PREFIX!r} nor {HEAD_PREFIX!r})")
    weights, report = {}, {}
    adapter_source = {}
    for key, value in state_dict.items():
        if not key.startswith(ADAPTER_PREFIX):
            continue
        name = key[len(ADAPTER_PREFIX) :]
        if name in ADAPTER_DROPPED:
            report[key] = f"dropped: {ADAPTER_DROPPED[name]}"
        else:
            adapter_source[name] = value
            report[key] = "mapped -> adapter"
    try:
        adapter = convert_official_adapter_state_dict(adapter_source, num_layers, num_experts, num_routers)
        weights.update({f"adapter.{key}": value for key, value in adapter.items()})
    except ValueError as error:
        problems.append(f"under {ADAPTER_PREFIX!r}: {error}")
    try:
        head, head_report = convert_mmdet_mask2former_head(state_dict, prefix=HEAD_PREFIX)
        weights.update({f"{HEAD_PREFIX}{key}": value for key, value in head.items()})
        report.update(head_report)
    except ValueError as error:
        problems.append(str(error))
    if problems:
        raise ValueError("Cannot convert the released checkpoint:\n- " + "\n- ".join(problems))
    return weights, report


def _vit_block_table(mlp_names: tuple[str, str], key_bias: bool) -> dict[str, str | tuple[str | None, ...]]:
    """Meta/DINOv2 block names -> transformers' layer names (shared by DINOv3ViTLayer and Dinov2Layer). A tuple splits
    the fused q, k, v tensor into three; `None` drops that third."""
    block = {f"norm{n}.{p}": f"norm{n}.{p}" for n in (1, 2) for p in ("weight", "bias")}
    block["attn.qkv.weight"] = tuple(f"attention.{x}_proj.weight" for x in "qkv")
    k_bias = "attention.k_proj.bias" if key_bias else None
    block["attn.qkv.bias"] = ("attention.q_proj.bias", k_bias, "attention.v_proj.bias")
    block.update({f"attn.proj.{p}": f"attention.o_proj.{p}" for p in ("weight", "bias")})
    block.update({f"ls{n}.gamma": f"layer_scale{n}.lambda1" for n in (1, 2)})
    for source, ours in zip(("fc1", "fc2"), mlp_names):
        block.update({f"mlp.{source}.{p}": f"mlp.{ours}.{p}" for p in ("weight", "bias")})
    return block


def _backbone_mapping(model: SpectralMoEForSemanticSegmentation) -> dict[str, str | tuple[str | None, ...]]:
    """Every key the converted-backbone file must hold -> our model's key(s), for the model's encoder depths."""
    visual_tokens = {
        "cls_token": "embeddings.cls_token",
        "storage_tokens": "embeddings.register_tokens",
        "mask_token": "embeddings.mask_token",
        "patch_embed.proj.weight": "embeddings.patch_embeddings.weight",
        "patch_embed.proj.bias": "embeddings.patch_embeddings.bias",
        "norm.weight": "norm.weight",
        "norm.bias": "norm.bias",
    }
    depth_tokens = {
        "cls_token": "embeddings.cls_token",
        "mask_token": "embeddings.mask_token",
        "pos_embed": "embeddings.position_embeddings",
        "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
        "norm.weight": "layernorm.weight",
        "norm.bias": "layernorm.bias",
    }
    visual, depth = model.visual_encoder.model.config, model.depth_encoder.model.config
    encoders = [  # (source prefix, our prefix, our layer prefix, config, top-level names, MLP names, key bias)
        ("", "visual_encoder.model.", "model.layer.", visual, visual_tokens, ("up_proj", "down_proj"), visual.key_bias),
        (DEPTH_PREFIX, "depth_encoder.model.", "encoder.layer.", depth, depth_tokens, ("fc1", "fc2"), True),
    ]
    mapping = {}
    for source_prefix, target_prefix, layer_prefix, config, tokens, mlp_names, key_bias in encoders:
        block, targets = _vit_block_table(mlp_names, key_bias), dict(tokens)
        for i in range(config.num_hidden_layers):
            layer = f"{layer_prefix}{i}."
            targets.update({f"blocks.{i}.{key}": _prefixed(layer, value) for key, value in block.items()})
        mapping.update({source_prefix + key: _prefixed(target_prefix, value) for key, value in targets.items()})
    return mapping


def _prefixed(prefix: str, target: str | tuple[str | None, ...]) -> str | tuple[str | None, ...]:
    if isinstance(target, str):
        return prefix + target
    return tuple(None if name is None else prefix + name for name in target)


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


def _check_rope_periods(model: SpectralMoEForSemanticSegmentation, periods: torch.Tensor) -> None:
    """The file's RoPE periods must be those transformers derives from the config (within bf16 precision, in which
    Meta stores them): else the config's `rope_theta` or head count does not describe the file's encoder."""
    inv_freq = _rope_inv_freq(model)
    if periods.shape != inv_freq.shape or not torch.allclose(periods.float().reciprocal(), inv_freq, rtol=1e-2):
        raise ValueError(
            f"`rope_embed.periods` of the backbone file ({periods.tolist()}) does not match the visual encoder's "
            f"config (rope_theta={model.visual_encoder.model.config.rope_theta}, periods "
            f"{inv_freq.reciprocal().tolist()})."
        )


def _rope_inv_freq(model: SpectralMoEForSemanticSegmentation) -> torch.Tensor:
    """The RoPE frequencies of the visual encoder's config, computed on the CPU whatever device the model is on."""
    with torch.device("cpu"):
        return DINOv3ViTRopePositionEmbedding(model.visual_encoder.model.config).inv_freq


def convert_backbone_state_dict(
    state_dict: dict[str, torch.Tensor], model: SpectralMoEForSemanticSegmentation
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Maps the authors' converted-backbone file (layout in the module docstring) onto the model's
    `visual_encoder.model.*` (transformers DINOv3ViTModel) and `depth_encoder.model.*` (Dinov2Model) weights.

    Args:
        state_dict (`dict[str, torch.Tensor]`): the file's tensors.
        model ([`SpectralMoEForSemanticSegmentation`]): gives the target names and shapes (may be on the meta device).

    Returns:
        `(weights, report)`: our keys -> tensors, and every source key -> `"mapped -> ..."` / `"dropped: <reason>"`.

    Raises:
        `ValueError`: naming every unknown key, every missing one and every tensor whose shape cannot be fitted.
    """
    if model.depth_encoder is None:
        raise ValueError("The converted backbone holds a depth encoder, but this config has `fusion='none'`.")
    mapping, expected = _backbone_mapping(model), model.state_dict()
    expansion = model.config.patch_embed_expansion
    weights, report, unexpected, mismatched = {}, {}, [], []
    source = {}  # canonical name -> (key in the file, tensor)
    for key, value in state_dict.items():
        name = BACKBONE_ALIASES.get(key, key)
        if name in source or (name != key and name in state_dict):  # both spellings of one tensor
            unexpected.append(key)
        else:
            source[name] = (key, value)
    for name, (key, value) in sorted(source.items()):
        target = mapping.get(name)
        if target is None:
            reason = next((why for pattern, why in BACKBONE_DROPPED.items() if re.fullmatch(pattern, name)), None)
            if reason is None:
                unexpected.append(key)
                continue
            if name == "rope_embed.periods":
                _check_rope_periods(model, value)
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
    missing = sorted(key for key in mapping if key not in source)
    if unexpected or missing or mismatched:
        problems = [f"unexpected keys {unexpected}"] if unexpected else []
        problems += [f"missing keys {missing}"] if missing else []
        problems += [f"shapes that do not fit {mismatched}"] if mismatched else []
        raise ValueError("Cannot convert the backbone file: " + "; ".join(problems) + ".")
    return weights, report


def match_depth_position_grid(config: SpectralMoEConfig, backbone_state_dict: dict[str, torch.Tensor]) -> None:
    """Sets the depth encoder's `image_size` so its position embedding has the grid of the backbone file's
    `pos_embed` (the authors' conversion may have pre-interpolated it to the training grid); a no-op for the original
    37x37 grid of PromptDA-L."""
    pos_embed = backbone_state_dict.get(DEPTH_PREFIX + "pos_embed")
    if pos_embed is None:
        return  # reported as missing by convert_backbone_state_dict
    grid = round((pos_embed.shape[1] - 1) ** 0.5)
    if grid * grid + 1 != pos_embed.shape[1]:
        raise ValueError(f"{DEPTH_PREFIX}pos_embed {tuple(pos_embed.shape)} is not 1 + a square grid of positions.")
    config.depth_backbone_config = copy.deepcopy(config.depth_backbone_config)  # never edit a caller's config
    config.depth_backbone_config.image_size = grid * config.depth_backbone_config.patch_size


def _assign_weights(model: SpectralMoEForSemanticSegmentation, weights: dict[str, torch.Tensor]) -> None:
    """Assigns converted tensors to the meta-device model (cast to its dtype). Every weight outside the frozen
    encoders must be covered; the encoders either entirely (their non-persistent RoPE frequencies are then rebuilt)
    or not at all."""
    expected = model.state_dict()
    misfits = [
        f"{key}: file {tuple(value.shape)}, model {tuple(expected[key].shape) if key in expected else None}"
        for key, value in weights.items()
        if key not in expected or value.shape != expected[key].shape
    ]
    if misfits:
        raise ValueError(
            "The checkpoint does not fit the configured architecture (layer counts, num_experts, expert_rank, "
            f"num_expert_tokens, decoder sizes, num_labels?): {misfits}"
        )
    with_encoders = any(key.startswith(FROZEN_PREFIXES) for key in weights)
    required = [key for key in expected if with_encoders or not key.startswith(FROZEN_PREFIXES)]
    missing = [key for key in required if key not in weights]
    if missing:
        raise ValueError(f"No converted weight for {missing}.")
    cast = {key: value.to(expected[key].dtype) for key, value in weights.items()}
    model.load_state_dict(cast, strict=False, assign=True)
    if with_encoders:
        model.visual_encoder.model.rope_embeddings.inv_freq = _rope_inv_freq(model)


def released_model_card(config: SpectralMoEConfig, model_id: str) -> str:
    """Model card of a converted release: provenance and the authors' reported score, not re-measured here."""
    provenance = (
        "Converted with `python -m modeling_spectralmoe.convert_official` from the authors' released checkpoint for "
        "Five-Billion-Pixels cross-sensor (GF-2 source; GF-1, PlanetScope, Sentinel-2 targets). The paper reports "
        "66.19 mIoU / 77.25 mAcc on the pooled targets (Table 2); this folder has not been re-evaluated. It keeps the "
        "released code's numerics (`perceptual_map=\"official_sum_product\"`, `fusion=\"official_diagonal\"`)."
    )
    return model_card(config, {}, "five-billion-pixels", model_id, "authors' release", False, provenance)


def convert_official_checkpoint(
    checkpoint_path: str,
    output_dir: str,
    backbone_path: str | None = None,
    config_overrides: dict | None = None,
) -> ConversionReport:
    """Converts the authors' released checkpoint into a model folder (config, weights, image processor).

    Args:
        checkpoint_path (`str`): the released mmseg checkpoint (`{"state_dict": ..., "meta": ...}`), `.pth` or
            `.safetensors`. Loaded with `weights_only=True`: a pickle that would run code is refused.
        output_dir (`str`): folder to write.
        backbone_path (`str`, *optional*): the authors' converted-backbone file. With it the folder also holds the
            frozen encoders (`save_encoders=True`) and is complete offline.
        config_overrides (`dict`, *optional*): fields replacing `RELEASED_SETTINGS`, e.g. tiny sizes in tests.

    Returns:
        [`ConversionReport`]: the fate of every key; `report.summary()` is what the command line prints.
        The folder also gets a model card (README.md) stating where the weights come from.
    """
    config = released_config(**(config_overrides or {}))
    released = read_state_dict_file(str(checkpoint_path))
    backbone = read_state_dict_file(str(backbone_path)) if backbone_path is not None else None
    if backbone is not None:
        match_depth_position_grid(config, backbone)
    with torch.device("meta"):
        model = SpectralMoEForSemanticSegmentation(config)
    if backbone is None and not model.has_named_encoders():
        raise ValueError(
            "Without a backbone file the config must name the encoders' checkpoints (`backbone`, `depth_backbone`): "
            "the folder holds the adapter and head only."
        )
    weights, report = convert_released_state_dict(
        released, config.backbone_config.num_hidden_layers, config.num_experts, model.adapter.gate_prototypes.shape[1]
    )
    keys = {str(checkpoint_path): report}
    if backbone is not None:
        encoder_weights, keys[str(backbone_path)] = convert_backbone_state_dict(backbone, model)
        weights.update(encoder_weights)
    _assign_weights(model, weights)
    model.save_pretrained(output_dir, save_encoders=backbone is not None)
    released_image_processor().save_pretrained(output_dir)
    (Path(output_dir) / "README.md").write_text(released_model_card(config, Path(output_dir).name))
    return ConversionReport(output_dir=str(output_dir), includes_encoders=backbone is not None, keys=keys)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Convert the authors' released SpectralMoE checkpoint (mmseg) to a transformers model folder."
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="the released mmseg checkpoint (.pth)")
    parser.add_argument("--backbone", type=Path, help="the authors' converted backbone (DINOv3 + depth_anything.*)")
    parser.add_argument("--output-dir", required=True, type=Path, help="model folder to write")
    args = parser.parse_args(argv)
    try:
        report = convert_official_checkpoint(args.checkpoint, args.output_dir, args.backbone)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from error
    print(report.summary())


if __name__ == "__main__":
    main()


__all__ = [
    "ConversionReport",
    "convert_backbone_state_dict",
    "convert_official_checkpoint",
    "convert_released_state_dict",
    "released_config",
    "released_image_processor",
]
