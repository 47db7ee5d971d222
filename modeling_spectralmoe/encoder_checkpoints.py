"""Architectures of the encoder checkpoints the package names, so a model can be built without a download."""

import json
import os

from transformers import AutoConfig, CLIPVisionConfig, DINOv3ViTConfig, Dinov2Config, PreTrainedConfig, SamVisionConfig

from .configuration_dofa import DOFAConfig
from .configuration_eva02 import EVA02Config


def _dinov3(hidden_size: int, num_layers: int, num_heads: int) -> DINOv3ViTConfig:
    return DINOv3ViTConfig(
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        patch_size=16,
        num_register_tokens=4,
        layerscale_value=1.0,
        rope_theta=100.0,
        pos_embed_rescale=2.0,
        key_bias=False,
        layer_norm_eps=1e-5,
    )


def _dinov2_large() -> Dinov2Config:
    """DINOv2 ViT-L/14 without registers (`facebook/dinov2-large`, and the encoder inside the depth models)."""
    return Dinov2Config(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        mlp_ratio=4,
        patch_size=14,
        image_size=518,
        layerscale_value=1.0,
    )


def _clip_vision_large() -> CLIPVisionConfig:
    """The image tower of `openai/clip-vit-large-patch14` (OpenAI's ViT-L/14 at 224 px)."""
    return CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, projection_dim=768,
        image_size=224, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    )


def _sam_vision_huge() -> SamVisionConfig:
    """The image encoder of `facebook/sam-vit-huge` (SAM ViT-H at 1024 px): windowed attention (14 x 14) except the
    four global blocks, decomposed relative positions, and the neck to 256 channels."""
    return SamVisionConfig(
        hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, mlp_dim=5120, image_size=1024, patch_size=16,
        window_size=14, global_attn_indexes=[7, 15, 23, 31], use_abs_pos=True, use_rel_pos=True, output_channels=256,
        layer_norm_eps=1e-6,
    )


def _dofa(hidden_size: int, num_layers: int, num_heads: int) -> DOFAConfig:
    return DOFAConfig(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=4 * hidden_size,
    )


# Visual encoders: DINOv3, DINOv2, CLIP and SAM (transformers format; the published architectures, which the paper's
# Table 1 presets override to 512-px crops and 16-px patches), EVA02 (timm's or EVA's files) and DOFA (official `.pth`
# files inside the `earthflow/DOFA` repo, named as "repo/filename").
VISUAL_ENCODERS = {
    "facebook/dinov3-vits16-pretrain-lvd1689m": lambda: _dinov3(384, 12, 6),
    "facebook/dinov3-vitb16-pretrain-lvd1689m": lambda: _dinov3(768, 12, 12),
    "facebook/dinov3-vitl16-pretrain-lvd1689m": lambda: _dinov3(1024, 24, 16),
    "facebook/dinov2-large": _dinov2_large,
    "openai/clip-vit-large-patch14": _clip_vision_large,
    "facebook/sam-vit-huge": _sam_vision_huge,
    # EVA02-L, MIM on Merged-38M: timm's port (patch 14, 16 x 16 table) and EVA's own file, whose kernel EVA's authors
    # already resized to 16 (the one Rein-family code loads; 16 x 16 table too).
    "timm/eva02_large_patch14_224.mim_m38m": EVA02Config,
    "Yuxin-CV/EVA-02/eva02/pt/eva02_L_pt_m38m_p14to16.pt": lambda: EVA02Config(patch_size=16, image_size=256),
    "earthflow/DOFA/DOFA_ViT_base_e100.pth": lambda: _dofa(768, 12, 12),
    "earthflow/DOFA/DOFA_ViT_large_e100.pth": lambda: _dofa(1024, 24, 16),
}

# Depth encoders: the DINOv2 backbone inside these depth-estimation checkpoints.
DEPTH_ENCODERS = {
    "depth-anything/prompt-depth-anything-vitl-hf": _dinov2_large,
    "depth-anything/Depth-Anything-V2-Large-hf": _dinov2_large,
}


def _config_from_folder(path: str, role: str) -> PreTrainedConfig:
    with open(os.path.join(path, "config.json")) as handle:
        model_type = json.load(handle).get("model_type")
    if model_type == DOFAConfig.model_type:
        return DOFAConfig.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    if role == "depth" and getattr(config, "backbone_config", None) is not None:
        return config.backbone_config
    return image_encoder_config(config) if role == "visual" else config


def image_encoder_config(config: PreTrainedConfig | None) -> PreTrainedConfig | None:
    """The image tower's config of a full CLIP or SAM config (its `vision_config`, which `CLIPVisionModel` /
    `SamVisionModel` load from the same checkpoint); other configs as they are."""
    return getattr(config, "vision_config", None) or config


def known_encoder_config(name_or_path: str, role: str) -> PreTrainedConfig:
    """Architecture of an encoder named by a local folder (its `config.json`) or by a checkpoint in our table.

    Args:
        name_or_path: a local folder with a `config.json`, or a Hub id from `VISUAL_ENCODERS` / `DEPTH_ENCODERS`.
        role: `"visual"` or `"depth"`; for depth-estimation checkpoints the DINOv2 backbone's config is returned, for
            a visual folder of a two-tower model (CLIP, SAM) its `vision_config`.
    """
    if os.path.isfile(os.path.join(name_or_path, "config.json")):
        return _config_from_folder(name_or_path, role)
    table = VISUAL_ENCODERS if role == "visual" else DEPTH_ENCODERS
    if name_or_path in table:
        return table[name_or_path]()
    raise ValueError(
        f"Unknown {role} encoder {name_or_path!r}: it is neither a local folder with a config.json nor one of the "
        f"checkpoints whose architecture the package knows ({sorted(table)}). Pass its architecture as "
        f"`{'backbone_config' if role == 'visual' else 'depth_backbone_config'}`."
    )
