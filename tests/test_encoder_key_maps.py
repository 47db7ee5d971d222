"""Original checkpoints of DINOv2 (Meta), CLIP (OpenAI `visual.*`) and SAM (`image_encoder.*`) convert to the
transformers classes: synthetic state dicts under the publishers' names, with the shapes their code gives a tiny
architecture, load strictly into the tiny transformers model, each tensor where it belongs."""

import logging
import re

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    SamVisionConfig,
    SamVisionModel,
)

from modeling_spectralmoe.checkpoint_files import original_state_dict, read_state_dict_file
from modeling_spectralmoe.encoder_key_maps import (
    convert_meta_dinov2_state_dict,
    convert_openai_clip_visual_state_dict,
    convert_sam_image_encoder_state_dict,
)

WIDTH, LAYERS, HEADS = 32, 2, 2
LOGGER = "modeling_spectralmoe.encoder_key_maps"


def _random(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=generator) for key, shape in shapes.items()}


def _weight_and_bias(name: str, out_features: int, in_features: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (out_features, in_features), f"{name}.bias": (out_features,)}


def _layer_norm(name: str, width: int = WIDTH) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (width,), f"{name}.bias": (width,)}


# DINOv2: patch 14 on a 28-px image, 2 x 2 patches, LayerScale, MLP ratio 4 (facebookresearch/dinov2 names).
def meta_dinov2_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    shapes = {
        "cls_token": (1, 1, WIDTH), "mask_token": (1, WIDTH), "pos_embed": (1, 1 + 4, WIDTH),
        "patch_embed.proj.weight": (WIDTH, 3, 14, 14), "patch_embed.proj.bias": (WIDTH,), **_layer_norm("norm"),
    }
    for i in range(LAYERS):
        block = f"blocks.{i}."
        shapes |= {**_layer_norm(block + "norm1"), **_layer_norm(block + "norm2")}
        shapes |= _weight_and_bias(block + "attn.qkv", 3 * WIDTH, WIDTH)
        shapes |= _weight_and_bias(block + "attn.proj", WIDTH, WIDTH)
        shapes |= {block + "ls1.gamma": (WIDTH,), block + "ls2.gamma": (WIDTH,)}
        shapes |= _weight_and_bias(block + "mlp.fc1", 4 * WIDTH, WIDTH)
        shapes |= _weight_and_bias(block + "mlp.fc2", WIDTH, 4 * WIDTH)
    return _random(shapes, seed)


def tiny_dinov2() -> Dinov2Model:
    return Dinov2Model(Dinov2Config(hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS, mlp_ratio=4,
                                    patch_size=14, image_size=28))


# CLIP: the whole OpenAI model (image and text towers), patch 14 on 28 px, as its TorchScript `state_dict()` holds it.
CLIP_PROJECTION = 16  # the width `visual.proj` maps the cls token to (unused here)


def openai_clip_state_dict(seed: int = 1) -> dict[str, torch.Tensor]:
    shapes = {
        "visual.class_embedding": (WIDTH,), "visual.positional_embedding": (1 + 4, WIDTH),
        "visual.conv1.weight": (WIDTH, 3, 14, 14), **_layer_norm("visual.ln_pre"), **_layer_norm("visual.ln_post"),
        "visual.proj": (WIDTH, CLIP_PROJECTION),
        "positional_embedding": (7, 24), "token_embedding.weight": (50, 24), **_layer_norm("ln_final", 24),
        "text_projection": (24, 16), "logit_scale": (), "transformer.resblocks.0.attn.in_proj_weight": (72, 24),
    }
    for i in range(LAYERS):
        block = f"visual.transformer.resblocks.{i}."
        shapes |= {block + "attn.in_proj_weight": (3 * WIDTH, WIDTH), block + "attn.in_proj_bias": (3 * WIDTH,)}
        shapes |= _weight_and_bias(block + "attn.out_proj", WIDTH, WIDTH)
        shapes |= {**_layer_norm(block + "ln_1"), **_layer_norm(block + "ln_2")}
        shapes |= _weight_and_bias(block + "mlp.c_fc", 4 * WIDTH, WIDTH)
        shapes |= _weight_and_bias(block + "mlp.c_proj", WIDTH, 4 * WIDTH)
    state_dict = _random(shapes, seed)
    scalars = {"input_resolution": 28, "context_length": 7, "vocab_size": 50}
    return state_dict | {key: torch.tensor(value) for key, value in scalars.items()}


def tiny_clip_vision() -> CLIPVisionModel:
    return CLIPVisionModel(CLIPVisionConfig(hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_hidden_layers=LAYERS,
                                            num_attention_heads=HEADS, image_size=28, patch_size=14))


# SAM: 64-px image, patch 16 (4 x 4 grid), window 2, block 1 global, neck to 16 channels (segment-anything names).
SAM_NECK, SAM_GRID, SAM_WINDOW = 16, 4, 2


def sam_state_dict(seed: int = 2) -> dict[str, torch.Tensor]:
    head_dim = WIDTH // HEADS
    shapes = {
        "image_encoder.pos_embed": (1, SAM_GRID, SAM_GRID, WIDTH),
        "image_encoder.patch_embed.proj.weight": (WIDTH, 3, 16, 16), "image_encoder.patch_embed.proj.bias": (WIDTH,),
        "image_encoder.neck.0.weight": (SAM_NECK, WIDTH, 1, 1), **_layer_norm("image_encoder.neck.1", SAM_NECK),
        "image_encoder.neck.2.weight": (SAM_NECK, SAM_NECK, 3, 3), **_layer_norm("image_encoder.neck.3", SAM_NECK),
        "prompt_encoder.point_embeddings.0.weight": (1, SAM_NECK), "mask_decoder.iou_token.weight": (1, SAM_NECK),
    }
    for i, span in enumerate((SAM_WINDOW, SAM_GRID)):  # block 0 windowed, block 1 global
        block = f"image_encoder.blocks.{i}."
        shapes |= {**_layer_norm(block + "norm1"), **_layer_norm(block + "norm2")}
        shapes |= _weight_and_bias(block + "attn.qkv", 3 * WIDTH, WIDTH)
        shapes |= _weight_and_bias(block + "attn.proj", WIDTH, WIDTH)
        shapes |= {block + f"attn.rel_pos_{axis}": (2 * span - 1, head_dim) for axis in "hw"}
        shapes |= _weight_and_bias(block + "mlp.lin1", 2 * WIDTH, WIDTH)
        shapes |= _weight_and_bias(block + "mlp.lin2", WIDTH, 2 * WIDTH)
    return _random(shapes, seed)


def tiny_sam_vision() -> SamVisionModel:
    return SamVisionModel(SamVisionConfig(
        hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS, mlp_dim=2 * WIDTH, image_size=64,
        patch_size=16, window_size=SAM_WINDOW, global_attn_indexes=[1], output_channels=SAM_NECK,
    ))


FAMILIES = {  # model_type -> (original state dict, converter, tiny transformers model)
    "dinov2": (meta_dinov2_state_dict, convert_meta_dinov2_state_dict, tiny_dinov2),
    "clip_vision_model": (openai_clip_state_dict, convert_openai_clip_visual_state_dict, tiny_clip_vision),
    "sam_vision_model": (sam_state_dict, convert_sam_image_encoder_state_dict, tiny_sam_vision),
}
IMAGE_ENCODER_PARTS = {  # the original keys of the image encoder (the rest are unused parts)
    "dinov2": lambda key: True,
    "clip_vision_model": lambda key: key.startswith("visual.") and key != "visual.proj",
    "sam_vision_model": lambda key: key.startswith("image_encoder."),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_original_checkpoint_loads_strictly_and_every_tensor_is_used(family):
    original, convert, build = FAMILIES[family]
    state_dict, model = original(), build()
    converted = convert(state_dict)
    model.load_state_dict(converted, strict=True)  # raises on a missing or unexpected key or a shape mismatch
    # Every value of the image encoder is kept once (fused tensors are split, not copied).
    kept = [value for key, value in state_dict.items() if IMAGE_ENCODER_PARTS[family](key)]
    assert sum(value.numel() for value in converted.values()) == sum(value.numel() for value in kept)


def test_dinov2_fused_qkv_rows_land_in_q_k_v_and_layer_scale_in_lambda():
    original = meta_dinov2_state_dict()
    converted = convert_meta_dinov2_state_dict(original)
    qkv_weight, qkv_bias = original["blocks.1.attn.qkv.weight"], original["blocks.1.attn.qkv.bias"]
    for third, name in enumerate("qkv"):
        rows = slice(third * WIDTH, (third + 1) * WIDTH)
        assert torch.equal(converted[f"encoder.layer.1.attention.{name}_proj.weight"], qkv_weight[rows])
        assert torch.equal(converted[f"encoder.layer.1.attention.{name}_proj.bias"], qkv_bias[rows])
    assert torch.equal(converted["encoder.layer.0.layer_scale2.lambda1"], original["blocks.0.ls2.gamma"])
    assert torch.equal(converted["embeddings.position_embeddings"], original["pos_embed"])


def test_dinov2_attention_equals_the_meta_attention_on_the_original_tensors():
    """Meta's attention reads the fused projection as (3, heads, head_dim) along its output; the converted transformers
    attention computes the same output."""
    original = meta_dinov2_state_dict()
    tokens = torch.randn(2, 5, WIDTH, generator=torch.Generator().manual_seed(3))
    batch, length, _ = tokens.shape
    qkv = F.linear(tokens, original["blocks.1.attn.qkv.weight"], original["blocks.1.attn.qkv.bias"])
    query, key, value = qkv.reshape(batch, length, 3, HEADS, WIDTH // HEADS).permute(2, 0, 3, 1, 4)
    heads = F.scaled_dot_product_attention(query, key, value).transpose(1, 2).reshape(batch, length, WIDTH)
    expected = F.linear(heads, original["blocks.1.attn.proj.weight"], original["blocks.1.attn.proj.bias"])
    model = tiny_dinov2().eval()
    model.load_state_dict(convert_meta_dinov2_state_dict(original))
    output, _ = model.encoder.layer[1].attention(tokens)
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)


def test_dinov2_chunked_blocks_read_as_plain_blocks():
    """With `block_chunks=2` Meta's model stores block i of chunk c as `blocks.{c}.{i}.*` (global index i)."""
    original = meta_dinov2_state_dict()
    chunked = {re.sub(r"^blocks\.(\d+)\.", r"blocks.\1.\1.", key): value for key, value in original.items()}
    assert "blocks.1.1.attn.qkv.weight" in chunked and "blocks.1.attn.qkv.weight" not in chunked
    expected = convert_meta_dinov2_state_dict(original)
    converted = convert_meta_dinov2_state_dict(chunked)
    assert converted.keys() == expected.keys()
    assert all(torch.equal(converted[key], expected[key]) for key in expected)


def test_clip_places_class_embedding_positions_and_split_in_proj(caplog):
    original = openai_clip_state_dict()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        converted = convert_openai_clip_visual_state_dict(original)
    assert torch.equal(converted["embeddings.class_embedding"], original["visual.class_embedding"])
    assert torch.equal(converted["embeddings.position_embedding.weight"], original["visual.positional_embedding"])
    assert torch.equal(converted["embeddings.patch_embedding.weight"], original["visual.conv1.weight"])
    in_proj = original["visual.transformer.resblocks.0.attn.in_proj_weight"]
    for third, name in enumerate("qkv"):
        assert torch.equal(converted[f"encoder.layers.0.self_attn.{name}_proj.weight"],
                           in_proj[third * WIDTH:(third + 1) * WIDTH])
    # The unused parts are reported, each under its reason: visual.proj, the text tower, the TorchScript scalars.
    dropped = {record.args[2]: record.args[1] for record in caplog.records if record.name == LOGGER}
    scalars = ["input_resolution", "context_length", "vocab_size"]
    text_tower = [key for key in original if not key.startswith("visual.") and key not in scalars]
    assert sorted(dropped.values()) == sorted([1, len(text_tower), len(scalars)])
    assert dropped["text tower"] == len(text_tower)


def test_clip_attention_equals_torch_multihead_attention_with_the_original_tensors():
    """OpenAI's blocks run `nn.MultiheadAttention`, whose parameters are the original `attn.*` tensors: the converted
    transformers attention computes the same output."""
    original = openai_clip_state_dict()
    reference = torch.nn.MultiheadAttention(WIDTH, HEADS, batch_first=True)
    block = "visual.transformer.resblocks.1.attn."
    reference.load_state_dict({key[len(block):]: value for key, value in original.items() if key.startswith(block)})
    model = tiny_clip_vision()
    model.load_state_dict(convert_openai_clip_visual_state_dict(original))
    tokens = torch.randn(2, 5, WIDTH, generator=torch.Generator().manual_seed(3))
    expected, _ = reference(tokens, tokens, tokens, need_weights=False)
    attention = model.encoder.layers[1].self_attn.eval()
    torch.testing.assert_close(attention(tokens, attention_mask=None)[0], expected, rtol=1e-5, atol=1e-5)


def test_sam_keeps_its_position_grid_fused_qkv_and_neck(caplog):
    original = sam_state_dict()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        converted = convert_sam_image_encoder_state_dict(original)
    assert converted["vision_encoder.pos_embed"].shape == (1, SAM_GRID, SAM_GRID, WIDTH)
    assert torch.equal(converted["vision_encoder.pos_embed"], original["image_encoder.pos_embed"])
    for name in ("attn.qkv.weight", "attn.rel_pos_h"):
        assert torch.equal(converted[f"vision_encoder.layers.1.{name}"], original[f"image_encoder.blocks.1.{name}"])
    assert torch.equal(converted["vision_encoder.neck.conv2.weight"], original["image_encoder.neck.2.weight"])
    assert torch.equal(converted["vision_encoder.neck.layer_norm1.bias"], original["image_encoder.neck.1.bias"])
    assert sum(record.args[1] for record in caplog.records if record.name == LOGGER) == 2  # prompt encoder, decoder


@pytest.mark.parametrize("family", FAMILIES)
def test_unknown_and_missing_original_keys_are_named(family):
    original, convert, _ = FAMILIES[family]
    state_dict = original()
    removed = next(key for key in state_dict if ".1." in key)  # a tensor of block 1
    state_dict.pop(removed)
    state_dict["head.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="original key names") as error:
        convert(state_dict)
    assert "unexpected keys [head.weight]" in str(error.value)
    assert f"missing keys [{removed}]" in str(error.value)


def test_a_file_of_another_family_is_refused_with_its_keys_cut_short():
    with pytest.raises(ValueError, match=r"Not a Meta DINOv2 state dict.*more\)") as error:
        convert_meta_dinov2_state_dict(sam_state_dict())
    assert "image_encoder.pos_embed" in str(error.value)


@pytest.mark.parametrize("family", FAMILIES)
def test_original_file_is_read_and_converted_by_family_name(family, tmp_path):
    original, convert, build = FAMILIES[family]
    path = str(tmp_path / "original.pth")
    torch.save(original(), path)
    build().load_state_dict(original_state_dict(family, path), strict=True)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_unknown_family_and_torchscript_archive_are_refused(tmp_path):
    path = str(tmp_path / "ViT-L-14.pt")
    torch.jit.script(torch.nn.Linear(2, 2)).save(path)
    with pytest.raises(ValueError, match=r"TorchScript archive.*torch\.jit\.load\(path"):
        read_state_dict_file(path)
    with pytest.raises(ValueError, match=r"known families: \['clip_vision_model', 'dinov2', 'sam_vision_model'\]"):
        original_state_dict("eva02", path)
