"""Key converters from the publishers' original encoder checkpoints to the transformers 5.x encoder classes.

The Rein-family code (Rein, DepthForge, SpectralMoE) loads its frozen backbones from the publishers' own files, not
from the Hub ports. These converters rename such a file's tensors to the keys of the transformers class that the
package runs for that family, so the same weights load with `load_state_dict(strict=True)`:

| family | original file | original names | transformers class |
|---|---|---|---|
| DINOv2 | Meta `dinov2_vitl14_pretrain.pth` | `cls_token`, `pos_embed`, `blocks.{i}.*`, `norm.*` | `Dinov2Model` |
| CLIP | OpenAI `ViT-L-14.pt`, re-saved as tensors | `visual.*` | `CLIPVisionModel` |
| SAM | Meta `sam_vit_h_4b8939.pth` | `image_encoder.*` | `SamVisionModel` |

Fused q, k, v projections (DINOv2's `attn.qkv`, CLIP's `attn.in_proj_*`) are split into transformers' separate
`q_proj`, `k_proj`, `v_proj` in that order along the output dimension; SAM keeps its fused `attn.qkv` in transformers
too. Tensors keep their stored dtype (OpenAI's file is float16); `load_state_dict` casts them to the model's.

Every key of a file is either converted or one of the family's known unused parts (CLIP's text tower and joint-space
projection, SAM's prompt encoder and mask decoder), which are dropped and logged; any other key, and any key the
architecture needs but the file lacks, raises a `ValueError` naming them. The depth is read from the block indices;
widths, patch size and grid are checked by the strict `load_state_dict` into the model.

`checkpoint_files.original_state_dict(family, path)` reads a local file and picks the converter by the `model_type` of
the encoder's config (`ORIGINAL_CHECKPOINT_CONVERTERS`).

Written against the module names of transformers 5.x (in 4.x DINOv2's attention was `attention.attention.query` ...
and CLIP's vision tower sat under `vision_model.`).
"""

import logging
import re
from collections.abc import Callable

import torch

logger = logging.getLogger(__name__)

# A target is our key, or the keys a fused tensor is split into along dim 0 (`None` drops that part).
KeyTarget = str | tuple[str | None, ...]
MAX_LISTED_KEYS = 20  # longer key lists are cut in error messages


def _weight_and_bias(source: str, target: str) -> dict[str, str]:
    return {f"{source}.{name}": f"{target}.{name}" for name in ("weight", "bias")}


def meta_vit_block_key_map(mlp_names: tuple[str, str] = ("fc1", "fc2"), key_bias: bool = True) -> dict[str, KeyTarget]:
    """Names inside one block of Meta's DINOv2/DINOv3 ViTs -> names inside transformers' `Dinov2Layer` (defaults) or
    `DINOv3ViTLayer` (`mlp_names=("up_proj", "down_proj")`, `key_bias=False`: its key projection has no bias)."""
    block = {**_weight_and_bias("norm1", "norm1"), **_weight_and_bias("norm2", "norm2")}
    block["attn.qkv.weight"] = tuple(f"attention.{x}_proj.weight" for x in "qkv")
    block["attn.qkv.bias"] = ("attention.q_proj.bias", "attention.k_proj.bias" if key_bias else None,
                              "attention.v_proj.bias")
    block.update(_weight_and_bias("attn.proj", "attention.o_proj"))
    block.update({f"ls{n}.gamma": f"layer_scale{n}.lambda1" for n in (1, 2)})
    for source, ours in zip(("fc1", "fc2"), mlp_names):
        block.update(_weight_and_bias(f"mlp.{source}", f"mlp.{ours}"))
    return block


def prefixed(prefix: str, target: KeyTarget) -> KeyTarget:
    """`target` with every key in it prefixed."""
    if isinstance(target, str):
        return prefix + target
    return tuple(None if name is None else prefix + name for name in target)


def _num_blocks(keys, block_prefix: str) -> int:
    """Depth of a checkpoint: one more than the highest `{block_prefix}{i}.` index among its keys."""
    pattern = re.compile(re.escape(block_prefix) + r"(\d+)\.")
    indices = [int(match.group(1)) for key in keys if (match := pattern.match(key))]
    return max(indices, default=-1) + 1


def key_map_with_blocks(
    top_level: dict[str, KeyTarget], block: dict[str, KeyTarget], num_blocks: int, source_prefix: str,
    target_prefix: str,
) -> dict[str, KeyTarget]:
    """The whole key map: top-level names plus `block` repeated for blocks 0 .. num_blocks - 1."""
    key_map = dict(top_level)
    for index in range(num_blocks):
        source_layer, target_layer = f"{source_prefix}{index}.", f"{target_prefix}{index}."
        key_map.update({source_layer + source: prefixed(target_layer, target) for source, target in block.items()})
    return key_map


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    return shown + (f", ... ({len(keys) - MAX_LISTED_KEYS} more)" if len(keys) > MAX_LISTED_KEYS else "")


def _rename(
    state_dict: dict[str, torch.Tensor], key_map: dict[str, KeyTarget], unused: dict[str, str], checkpoint: str,
) -> dict[str, torch.Tensor]:
    """Applies `key_map` after checking the file holds exactly its keys plus known unused ones (`unused`: regular
    expression -> why the part is not needed), which are dropped and logged."""
    dropped: dict[str, list[str]] = {}
    unexpected = []
    for key in state_dict:
        if key in key_map:
            continue
        reason = next((why for pattern, why in unused.items() if re.fullmatch(pattern, key)), None)
        if reason is None:
            unexpected.append(key)
        else:
            dropped.setdefault(reason, []).append(key)
    missing = [key for key in key_map if key not in state_dict]
    if unexpected or missing:
        problems = [f"unexpected keys [{_listed(unexpected)}]"] if unexpected else []
        problems += [f"missing keys [{_listed(missing)}]"] if missing else []
        raise ValueError(f"Not a {checkpoint} state dict with the original key names: " + "; ".join(problems) + ".")
    for reason, keys in dropped.items():
        logger.info("%s: dropped %d keys (%s): %s", checkpoint, len(keys), reason, _listed(keys))
    converted = {}
    for source, target in key_map.items():
        if isinstance(target, str):
            converted[target] = state_dict[source]
        else:
            parts = state_dict[source].chunk(len(target), dim=0)
            converted.update({name: part for name, part in zip(target, parts) if name is not None})
    return converted


# ------------------------------------------------------------------------------------------------------------- DINOv2
DINOV2_TOP_LEVEL = {
    "cls_token": "embeddings.cls_token",
    "mask_token": "embeddings.mask_token",
    "pos_embed": "embeddings.position_embeddings",
    **_weight_and_bias("patch_embed.proj", "embeddings.patch_embeddings.projection"),
    **_weight_and_bias("norm", "layernorm"),
}
DINOV2_CHUNKED_BLOCK = re.compile(r"blocks\.\d+\.(\d+)\.")  # `blocks.{chunk}.{i}.` when block_chunks > 0


def convert_meta_dinov2_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames a DINOv2 state dict of facebookresearch/dinov2 (e.g. `dinov2_vitl14_pretrain.pth`) to [`Dinov2Model`]'s
    keys.

    Files saved with `block_chunks > 0` name blocks `blocks.{chunk}.{i}.*` (the global index `i` is kept inside each
    chunk); they are read as `blocks.{i}.*`. Only the no-register models with an MLP feed-forward are covered: the
    `register_tokens` of the `*_reg4` files and the SwiGLU `mlp.w12` / `mlp.w3` of ViT-g are reported as unexpected.

    Args:
        state_dict (`dict[str, torch.Tensor]`): `cls_token` (1, 1, D), `mask_token` (1, D), `pos_embed` (1, 1 + N, D),
            `patch_embed.proj.*`, `blocks.{i}.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2,
            ls2.gamma}`, `norm.*`.

    Returns:
        `dict[str, torch.Tensor]`: the tensors under `Dinov2Model` names, fused `qkv` split into q, k, v.

    Raises:
        `ValueError`: naming the unexpected and the missing original keys.
    """
    state_dict = {DINOV2_CHUNKED_BLOCK.sub(r"blocks.\1.", key, count=1): value for key, value in state_dict.items()}
    key_map = key_map_with_blocks(
        DINOV2_TOP_LEVEL, meta_vit_block_key_map(), _num_blocks(state_dict, "blocks."), "blocks.", "encoder.layer."
    )
    return _rename(state_dict, key_map, {}, "Meta DINOv2")


# --------------------------------------------------------------------------------------------------------------- CLIP
CLIP_TOP_LEVEL = {
    "visual.class_embedding": "embeddings.class_embedding",
    "visual.positional_embedding": "embeddings.position_embedding.weight",
    "visual.conv1.weight": "embeddings.patch_embedding.weight",
    **_weight_and_bias("visual.ln_pre", "pre_layrnorm"),
    **_weight_and_bias("visual.ln_post", "post_layernorm"),
}
CLIP_BLOCK = {
    "attn.in_proj_weight": tuple(f"self_attn.{x}_proj.weight" for x in "qkv"),
    "attn.in_proj_bias": tuple(f"self_attn.{x}_proj.bias" for x in "qkv"),
    **_weight_and_bias("attn.out_proj", "self_attn.out_proj"),
    **_weight_and_bias("ln_1", "layer_norm1"),
    **_weight_and_bias("ln_2", "layer_norm2"),
    **_weight_and_bias("mlp.c_fc", "mlp.fc1"),
    **_weight_and_bias("mlp.c_proj", "mlp.fc2"),
}
CLIP_BLOCK_PREFIX = "visual.transformer.resblocks."
CLIP_UNUSED = {
    r"visual\.proj": "projection of the class token into the joint image-text space: segmentation uses the tokens",
    r"transformer\..+|token_embedding\.weight|positional_embedding|ln_final\.(weight|bias)|text_projection|logit_scale":
        "text tower",
    r"input_resolution|context_length|vocab_size": "scalars stored beside the weights in OpenAI's TorchScript files",
}


def convert_openai_clip_visual_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames the image tower of an openai/CLIP ViT state dict (e.g. `ViT-L-14.pt`) to [`CLIPVisionModel`]'s keys.

    OpenAI publishes TorchScript archives. The package does not load them: `torch.jit.load` deserialises the compiled
    code the archive carries, and the package reads only plain tensors from downloaded files (`torch.load` with
    `weights_only=True` refuses TorchScript as well). Re-save the tensors once, in a trusted environment:
    `torch.save(torch.jit.load("ViT-L-14.pt", map_location="cpu").state_dict(), "ViT-L-14-state-dict.pt")`. The
    non-TorchScript files of openai/CLIP's `build_model` (the same names) convert too.

    The text tower, `visual.proj` and the archive's scalars (`input_resolution`, `context_length`, `vocab_size`) are
    dropped and logged. Rein-family code adds `class_embedding` to the class token a second time; that is a forward
    quirk, not a key mapping, and is not applied here.

    Args:
        state_dict (`dict[str, torch.Tensor]`): `visual.class_embedding` (D,), `visual.positional_embedding` (1 + N, D),
            `visual.conv1.weight` (no bias), `visual.ln_pre.*`, `visual.transformer.resblocks.{i}.{ln_1,
            attn.in_proj_weight, attn.in_proj_bias, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}`, `visual.ln_post.*`,
            optionally the dropped keys.

    Returns:
        `dict[str, torch.Tensor]`: the tensors under `CLIPVisionModel` names, fused `in_proj` split into q, k, v.

    Raises:
        `ValueError`: naming the unexpected and the missing original keys.
    """
    key_map = key_map_with_blocks(
        CLIP_TOP_LEVEL, CLIP_BLOCK, _num_blocks(state_dict, CLIP_BLOCK_PREFIX), CLIP_BLOCK_PREFIX, "encoder.layers."
    )
    return _rename(state_dict, key_map, CLIP_UNUSED, "OpenAI CLIP")


# ---------------------------------------------------------------------------------------------------------------- SAM
SAM_TOP_LEVEL = {
    "image_encoder.pos_embed": "vision_encoder.pos_embed",
    **_weight_and_bias("image_encoder.patch_embed.proj", "vision_encoder.patch_embed.projection"),
    # The neck is an nn.Sequential: 1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d (convs without bias).
    "image_encoder.neck.0.weight": "vision_encoder.neck.conv1.weight",
    **_weight_and_bias("image_encoder.neck.1", "vision_encoder.neck.layer_norm1"),
    "image_encoder.neck.2.weight": "vision_encoder.neck.conv2.weight",
    **_weight_and_bias("image_encoder.neck.3", "vision_encoder.neck.layer_norm2"),
}
SAM_BLOCK = {
    **_weight_and_bias("norm1", "layer_norm1"),
    **_weight_and_bias("attn.qkv", "attn.qkv"),
    **_weight_and_bias("attn.proj", "attn.proj"),
    "attn.rel_pos_h": "attn.rel_pos_h",
    "attn.rel_pos_w": "attn.rel_pos_w",
    **_weight_and_bias("norm2", "layer_norm2"),
    **_weight_and_bias("mlp.lin1", "mlp.lin1"),
    **_weight_and_bias("mlp.lin2", "mlp.lin2"),
}
SAM_BLOCK_PREFIX = "image_encoder.blocks."
SAM_UNUSED = {
    r"prompt_encoder\..+": "prompt encoder: segmentation here takes no point, box or mask prompts",
    r"mask_decoder\..+": "mask decoder: replaced by the package's segmentation head",
}


def convert_sam_image_encoder_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames the image encoder of a facebookresearch/segment-anything state dict (e.g. `sam_vit_h_4b8939.pth`) to
    [`SamVisionModel`]'s keys (all under `vision_encoder.`; strip that prefix for a bare `SamVisionEncoder`).

    The prompt encoder and mask decoder are dropped and logged. The position table keeps its stored layout
    (1, 64, 64, D) for 1024-px SAM; resizing it to another grid is the encoder wrapper's business.

    Args:
        state_dict (`dict[str, torch.Tensor]`): `image_encoder.pos_embed`, `image_encoder.patch_embed.proj.*`,
            `image_encoder.blocks.{i}.{norm1, attn.qkv, attn.proj, attn.rel_pos_h, attn.rel_pos_w, norm2, mlp.lin1,
            mlp.lin2}`, `image_encoder.neck.{0,1,2,3}.*`, optionally `prompt_encoder.*` and `mask_decoder.*`.

    Returns:
        `dict[str, torch.Tensor]`: the tensors under `SamVisionModel` names.

    Raises:
        `ValueError`: naming the unexpected and the missing original keys.
    """
    key_map = key_map_with_blocks(
        SAM_TOP_LEVEL, SAM_BLOCK, _num_blocks(state_dict, SAM_BLOCK_PREFIX), SAM_BLOCK_PREFIX, "vision_encoder.layers."
    )
    return _rename(state_dict, key_map, SAM_UNUSED, "Segment Anything")


# Encoder family, as the `model_type` of its transformers config -> converter of its original checkpoint.
ORIGINAL_CHECKPOINT_CONVERTERS: dict[str, Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]] = {
    "dinov2": convert_meta_dinov2_state_dict,
    "clip_vision_model": convert_openai_clip_visual_state_dict,
    "sam_vision_model": convert_sam_image_encoder_state_dict,
}


__all__ = [
    "DINOV2_TOP_LEVEL",
    "ORIGINAL_CHECKPOINT_CONVERTERS",
    "convert_meta_dinov2_state_dict",
    "convert_openai_clip_visual_state_dict",
    "convert_sam_image_encoder_state_dict",
    "key_map_with_blocks",
    "meta_vit_block_key_map",
    "prefixed",
]
