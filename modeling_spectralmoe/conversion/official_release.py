"""Converts the authors' released SpectralMoE (an mmseg checkpoint, plus optionally their "converted backbone" file)
into a model folder that `from_pretrained` loads.

```bash
spectralmoe-convert-official --checkpoint RELEASED.pth [--backbone CONVERTED_BACKBONE.pth] --output-dir DIR \
    [--paper-benchmark fbp_cross_sensor]
```

Everything comes from the files, so one command converts any release of this architecture:
- sizes, routing settings, `out_indices`, decoder and loss settings: the config text mmengine keeps in the
  checkpoint's `meta["cfg"]` (read without executing it);
- class names: `meta["dataset_meta"]["classes"]`; normalisation: the config's data preprocessor (raw units);
- the depth encoder's sizes: the backbone file's tensors; the band count: the backbone config's `in_chans`.

The checkpoint is read with a restricted unpickler (`mmengine_checkpoint.py`): mmengine is not needed and nothing in
the file runs. It holds the trained parts only: `backbone.depthmoe.*` (the DepthMoE adapter) and `decode_head.*` (an
mmdet/mmseg Mask2Former head). With `--backbone` the folder also holds the frozen encoders exactly as the file gives
them (RoPE periods included); without it, the config names the Hub checkpoints of the same architecture and
`from_pretrained` loads the encoders from there.
"""

import argparse
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import DINOv3ViTConfig

from ..configuration_spectralmoe import SpectralMoEConfig
from ..data.benchmarks import PAPER_RESULTS
from ..encoder_checkpoints import DEPTH_ENCODERS, VISUAL_ENCODERS
from ..image_processing_spectralmoe import SpectralMoEImageProcessor
from ..modeling_spectralmoe import FROZEN_PREFIXES, SpectralMoEForSemanticSegmentation
from ..trainer.model_card import model_card
from .depthmoe_adapter import convert_official_adapter_state_dict
from .meta_vit import convert_backbone_state_dict, depth_encoder_config
from .mmdet_mask2former import convert_mmdet_mask2former_head
from .mmengine_checkpoint import Checkpoint, read_checkpoint
from .mmengine_config import parse_config_text

ADAPTER_PREFIX = "backbone.depthmoe."
HEAD_PREFIX = "decode_head."
ADAPTER_DROPPED = dict.fromkeys(
    ("mean", "std"),
    "buffer of the authors' module: the (1,)-shaped mean 0 and std 1 of the Normal used by the noisy-gating load "
    "estimate, not a trained weight (the model uses the standard Normal itself)",
)
SUPPORTED_BACKBONE = "DepthMoEDinoVisionTransformerV3"
# Meta's DINOv3 norm layer names -> LayerNorm eps.
LAYER_NORM_EPS = {"layernorm": 1e-6, "layernormbf16": 1e-5}
# The authors' backbone feeds `x[:, 1:]` to the depth model for multispectral (N, R, G, B) input and `x` for RGB.
AUTHORS_DEPTH_BANDS = {3: [0, 1, 2], 4: [1, 2, 3]}


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


def _field(values: dict, path: str):
    """`values["a"]["b"]` for `path="a.b"`, or an error naming the missing field."""
    for part in path.split("."):
        if not isinstance(values, dict) or part not in values:
            raise ValueError(f"The checkpoint's config has no `{path}`: it is not a SpectralMoE (DepthMoE) release.")
        values = values[part]
    return values


def visual_encoder_config(backbone: dict) -> DINOv3ViTConfig:
    """transformers' DINOv3 config of the authors' `DepthMoEDinoVisionTransformerV3` settings."""
    if backbone.get("type") != SUPPORTED_BACKBONE:
        raise ValueError(f"Only {SUPPORTED_BACKBONE} releases convert, found backbone {backbone.get('type')!r}.")
    unsupported = {
        "ffn_layer": ("mlp",), "pos_embed_rope_normalize_coords": ("separate",),
        "norm_layer": tuple(LAYER_NORM_EPS), "untie_global_and_local_cls_norm": (False,),
    }
    for name, allowed in unsupported.items():
        if backbone.get(name, allowed[0]) not in allowed:
            raise ValueError(f"backbone.{name}={backbone[name]!r} is not supported (expected one of {allowed}).")
    hidden_size = backbone["embed_dim"]
    return DINOv3ViTConfig(
        hidden_size=hidden_size,
        intermediate_size=int(hidden_size * backbone["ffn_ratio"]),
        num_hidden_layers=backbone["depth"],
        num_attention_heads=backbone["num_heads"],
        patch_size=backbone["patch_size"],
        num_register_tokens=backbone["n_storage_tokens"],
        rope_theta=float(backbone["pos_embed_rope_base"]),
        layer_norm_eps=LAYER_NORM_EPS[backbone.get("norm_layer", "layernorm")],
        query_bias=backbone.get("qkv_bias", True),
        value_bias=backbone.get("qkv_bias", True),
        key_bias=not backbone.get("mask_k_bias", False) and backbone.get("qkv_bias", True),
        proj_bias=backbone.get("proj_bias", True),
        mlp_bias=backbone.get("ffn_bias", True),
        image_size=backbone.get("img_size", 224),
    )


def _named_checkpoint(config, table: dict, fields: tuple[str, ...]) -> str | None:
    """The Hub id of `table` whose architecture equals `config` on `fields` (None when none does)."""
    def signature(candidate):
        return (candidate.model_type, *(getattr(candidate, name, None) for name in fields))

    return next((name for name, build in table.items() if signature(build()) == signature(config)), None)


def _adapter_fields(moe: dict, head: dict) -> dict:
    ranks = set(moe["lora_dims"]) if isinstance(moe["lora_dims"], (list, tuple)) else {moe["lora_dims"]}
    if len(ranks) != 1:
        raise ValueError(f"Experts of different ranks ({moe['lora_dims']}) are not supported.")
    if moe["query_dims"] != head["feat_channels"]:
        raise ValueError(f"depthmoe query_dims {moe['query_dims']} != head feat_channels {head['feat_channels']}.")
    return dict(
        adapter_type="spectralmoe", num_experts=moe["num_experts"], top_k=moe["top_k"], expert_rank=ranks.pop(),
        num_expert_tokens=moe["token_length"], gating=moe.get("gating", "laplace"),
        noisy_gating=moe.get("noisy_gating", True), shared_gate=moe.get("num_modalities", 2) == 1,
        perceptual_map="official_sum_product", fusion="official_diagonal",
    )


def _head_fields(head: dict) -> dict:
    pixel_layer = _field(head, "pixel_decoder.encoder.layer_cfg")
    decoder_layer = _field(head, "transformer_decoder.layer_cfg")
    heads = {pixel_layer["self_attn_cfg"]["num_heads"], decoder_layer["self_attn_cfg"]["num_heads"]}
    if len(heads) != 1:
        raise ValueError(f"Pixel decoder and transformer decoder with different head counts {heads} are not supported.")
    train = head.get("train_cfg", {})
    return dict(
        decoder_hidden_dim=head["feat_channels"], num_queries=head["num_queries"], decoder_num_heads=heads.pop(),
        pixel_decoder_layers=_field(head, "pixel_decoder.encoder.num_layers"),
        pixel_decoder_ffn_dim=pixel_layer["ffn_cfg"]["feedforward_channels"],
        pixel_decoder_num_points=pixel_layer["self_attn_cfg"]["num_points"],
        decoder_layers=_field(head, "transformer_decoder.num_layers"),
        decoder_ffn_dim=decoder_layer["ffn_cfg"]["feedforward_channels"],
        class_weight=_field(head, "loss_cls.loss_weight"), mask_weight=_field(head, "loss_mask.loss_weight"),
        dice_weight=_field(head, "loss_dice.loss_weight"), no_object_weight=_field(head, "loss_cls.class_weight")[-1],
        train_num_points=train.get("num_points", 12544), oversample_ratio=train.get("oversample_ratio", 3.0),
        importance_sample_ratio=train.get("importance_sample_ratio", 0.75),
    )


def _class_names(meta: dict, num_classes: int) -> dict[int, str]:
    names = list(meta.get("dataset_meta", {}).get("classes", ()))
    if names and len(names) != num_classes:
        raise ValueError(f"dataset_meta names {len(names)} classes but the head predicts {num_classes}.")
    return dict(enumerate(names or [f"class_{index}" for index in range(num_classes)]))


def release_config(
    released: Checkpoint,
    backbone_weights: dict[str, torch.Tensor] | None = None,
    band_names: list[str] | None = None,
    depth_rgb_bands: list[int] | None = None,
) -> tuple[SpectralMoEConfig, SpectralMoEImageProcessor]:
    """The model config and image processor of a release, read from its files (see the module docstring).

    Args:
        released: the released checkpoint (its `meta["cfg"]` must be the mmseg config text).
        backbone_weights: the converted-backbone file's tensors; they give the depth encoder's sizes. Without them the
            encoders must be checkpoints the package knows (DINOv3 S/B/L with PromptDA-L at ViT-L).
        band_names: optional names of the input bands (the files do not record them).
        depth_rgb_bands: the bands fed to the depth encoder; defaults to the authors' rule (RGB: 0, 1, 2; four bands:
            1, 2, 3), which must be given for other band counts.
    """
    if "cfg" not in released.meta:
        raise ValueError("The checkpoint has no meta['cfg'] config text: it is not an mmseg/mmengine release.")
    cfg = parse_config_text(released.meta["cfg"])
    backbone = _field(cfg, "model.backbone")
    head, preprocessor = _field(cfg, "model.decode_head"), _field(cfg, "model.data_preprocessor")
    visual = visual_encoder_config(backbone)
    num_channels = backbone.get("in_chans", 3)
    if depth_rgb_bands is None and num_channels not in AUTHORS_DEPTH_BANDS:
        raise ValueError(f"Which 3 of the {num_channels} bands feed the depth encoder? Pass --depth-rgb-bands.")
    sizes = ("hidden_size", "num_hidden_layers", "num_attention_heads")
    visual_name = _named_checkpoint(visual, VISUAL_ENCODERS, (*sizes, "intermediate_size", "num_register_tokens"))
    if backbone_weights is not None:
        depth = depth_encoder_config(backbone_weights, visual.num_attention_heads)
    elif visual_name is None:
        raise ValueError(
            "The release's encoders are no checkpoint the package knows (DINOv3 S/B/L with PromptDA-L), so the "
            "folder cannot load them from the Hub: pass the converted backbone file with --backbone."
        )
    else:
        depth = next(build() for build in DEPTH_ENCODERS.values())  # PromptDA-L, the authors' depth model
    config = SpectralMoEConfig(
        backbone=visual_name,
        backbone_config=visual,
        depth_backbone=_named_checkpoint(depth, DEPTH_ENCODERS, sizes),
        depth_backbone_config=depth,
        num_channels=num_channels,
        band_names=band_names,
        depth_rgb_bands=depth_rgb_bands or AUTHORS_DEPTH_BANDS[num_channels],
        patch_embed_expansion="cyclic",
        depth_grid_alignment="resample_patch_embed",
        depth_position_interpolation="dinov2",
        out_indices=list(backbone["out_indices"]),
        id2label=_class_names(released.meta, head["num_classes"]),
        **_adapter_fields(_field(backbone, "depthmoe_config"), head),
        **_head_fields(head),
    )
    processor = SpectralMoEImageProcessor(image_mean=preprocessor["mean"], image_std=preprocessor["std"])
    return config, processor


def convert_released_state_dict(
    state_dict: dict[str, torch.Tensor], num_layers: int, num_experts: int, num_routers: int = 2
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Maps the released mmseg state dict onto our model's `adapter.*` and `decode_head.*` weights.

    Returns:
        `(weights, report)`: our keys -> tensors, and every source key -> `"mapped -> ..."` / `"dropped: <reason>"`.

    Raises:
        `ValueError`: naming every key outside the two parts, and the unknown or missing keys of each part.
    """
    problems = []
    unexpected = sorted(key for key in state_dict if not key.startswith((ADAPTER_PREFIX, HEAD_PREFIX)))
    if unexpected:
        problems.append(f"unexpected keys {unexpected} (neither {ADAPTER_PREFIX!r} nor {HEAD_PREFIX!r})")
    weights, report, adapter_source = {}, {}, {}
    for key, value in state_dict.items():
        if key.startswith(ADAPTER_PREFIX):
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


def _assign_weights(model: SpectralMoEForSemanticSegmentation, weights: dict[str, torch.Tensor]) -> None:
    """Assigns converted tensors to the meta-device model (cast to its dtype). Every weight outside the frozen
    encoders must be covered; the encoders either entirely or not at all."""
    expected = model.state_dict()
    misfits = [
        f"{key}: file {tuple(value.shape)}, model {tuple(expected[key].shape) if key in expected else None}"
        for key, value in weights.items()
        if key not in expected or value.shape != expected[key].shape
    ]
    if misfits:
        raise ValueError(f"The checkpoint does not fit the architecture its config describes: {misfits}")
    with_encoders = any(key.startswith(FROZEN_PREFIXES) for key in weights)
    missing = [key for key in expected if key not in weights and (with_encoders or not key.startswith(FROZEN_PREFIXES))]
    if missing:
        raise ValueError(f"No converted weight for {missing}.")
    model.load_state_dict({key: value.to(expected[key].dtype) for key, value in weights.items()}, strict=False,
                          assign=True)


def release_model_card(config: SpectralMoEConfig, processor: SpectralMoEImageProcessor, released: Checkpoint,
                       checkpoint_path: str, model_id: str, paper_benchmark: str | None = None) -> str:
    """Model card of a converted release: where the weights come from, and the paper's score on `paper_benchmark`
    (quoted, with the paper as source); nothing re-measured here."""
    meta = released.meta
    provenance = (
        f"Converted from the authors' released checkpoint `{Path(checkpoint_path).name}` (experiment "
        f"`{meta.get('experiment_name', '?')}`, iteration {meta.get('iter', '?')}) by `spectralmoe-convert-official`. "
        "It keeps the released code's numerics (`perceptual_map=\"official_sum_product\"`, "
        "`fusion=\"official_diagonal\"`). Scores reported for it are the authors'; this folder has not been "
        "re-evaluated."
    )
    return model_card(config, {}, "authors' release", model_id, "authors' release", False, provenance,
                      processor=processor, paper_benchmark=paper_benchmark)


def convert_official_checkpoint(
    checkpoint_path: str | Path,
    output_dir: str | Path,
    backbone_path: str | Path | None = None,
    band_names: list[str] | None = None,
    depth_rgb_bands: list[int] | None = None,
    paper_benchmark: str | None = None,
) -> ConversionReport:
    """Converts the authors' release into a model folder (config, weights, image processor, model card).

    Args:
        checkpoint_path: the released mmseg checkpoint, as published (mmengine's training state included).
        output_dir: folder to write.
        backbone_path: the authors' converted-backbone file. With it the folder also holds the frozen encoders and
            is complete offline.
        band_names, depth_rgb_bands: see [`release_config`].
        paper_benchmark: the benchmark the release was trained for (a key of `data.benchmarks.PAPER_RESULTS`): the
            model card quotes the paper's score on it. The files do not record it.

    Returns:
        [`ConversionReport`]: the fate of every key; `report.summary()` is what the command line prints.
    """
    if paper_benchmark is not None and paper_benchmark not in PAPER_RESULTS:
        raise ValueError(f"Unknown paper benchmark {paper_benchmark!r}: expected one of {sorted(PAPER_RESULTS)}.")
    released = read_checkpoint(checkpoint_path)
    backbone = read_checkpoint(backbone_path).state_dict if backbone_path is not None else None
    config, processor = release_config(released, backbone, band_names, depth_rgb_bands)
    with torch.device("meta"):
        model = SpectralMoEForSemanticSegmentation(config)
    weights, report = convert_released_state_dict(
        released.state_dict, config.backbone_config.num_hidden_layers, config.num_experts,
        model.adapter.gate_prototypes.shape[1],
    )
    keys = {str(checkpoint_path): report}
    if backbone is not None:
        encoder_weights, keys[str(backbone_path)] = convert_backbone_state_dict(backbone, model)
        weights.update(encoder_weights)
    _assign_weights(model, weights)
    model.save_pretrained(output_dir, save_encoders=backbone is not None)
    processor.save_pretrained(output_dir)
    card = release_model_card(config, processor, released, str(checkpoint_path), Path(output_dir).name,
                              paper_benchmark)
    (Path(output_dir) / "README.md").write_text(card)
    return ConversionReport(output_dir=str(output_dir), includes_encoders=backbone is not None, keys=keys)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Convert the authors' released SpectralMoE checkpoint (mmseg) into a transformers model folder."
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="the released mmseg checkpoint (.pth)")
    parser.add_argument("--backbone", type=Path, help="the authors' converted backbone (DINOv3 + depth_anything.*)")
    parser.add_argument("--output-dir", required=True, type=Path, help="model folder to write")
    parser.add_argument("--band-names", nargs="+", help="names of the input bands, e.g. NIR R G B")
    parser.add_argument("--depth-rgb-bands", nargs=3, type=int, help="bands fed to the depth encoder as R, G, B")
    parser.add_argument("--paper-benchmark", choices=sorted(PAPER_RESULTS),
                        help="the benchmark the release was trained for: the model card quotes the paper's score on it")
    args = parser.parse_args(argv)
    try:
        report = convert_official_checkpoint(
            args.checkpoint, args.output_dir, args.backbone, args.band_names, args.depth_rgb_bands,
            args.paper_benchmark,
        )
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from error
    print(report.summary())


if __name__ == "__main__":
    main()


__all__ = ["ConversionReport", "convert_official_checkpoint", "convert_released_state_dict", "release_config"]
