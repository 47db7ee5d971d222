"""timm as an independent oracle: EVA02 (the package's model) against timm's `Eva`, and DINOv2, CLIP and SAM read from
their publishers' original files (Meta's DINOv2 names, OpenAI's `visual.*`, SAM's `image_encoder.*`) both by timm's
own checkpoint filters and by our key converters + layer loops. Same weights, same patch size on both sides.

timm needs a torchvision that matches torch, which the README's CPU torch lacks, so these tests are marked
`timm_oracle`, deselected by default (setup.cfg) and run by `.ci/run` in a second virtual environment with
`-m timm_oracle`; there a timm that does not import fails them (CI=true).
"""

import functools
import importlib
from typing import NamedTuple

import pytest
import torch

from modeling_spectralmoe.configuration_eva02 import EVA02Config
from modeling_spectralmoe.modeling_eva02 import EVA02Model, convert_eva02_state_dict, resize_position_table

from . import test_encoder_key_maps as original_formats
from .conftest import optional_import
from .test_backbone_families import feature_at_stride_16, frozen_model


pytestmark = pytest.mark.timm_oracle
ATOL = 1e-5


# ---- EVA02: the package's model against timm's `Eva` ---------------------------------------------------------------
# Stored grid 64 / 16 = 4 x 4; the input's grid is 3 x 5: one axis shrinks (antialias acts), the other grows.
IMAGE_SIZE, PATCH_SIZE, INPUT_SIZE = 64, 16, (48, 80)
WIDTH, DEPTH, HEADS = 64, 2, 4


@pytest.fixture(scope="module")
def timm():
    return optional_import("timm")


def timm_eva02(timm, attention_inner_norm: bool):
    """timm's EVA02-L architecture shrunk to a tiny width and depth, patch 16, with random non-trivial weights (every
    bias and norm parameter drawn, so a misplaced tensor shows)."""
    torch.manual_seed(0)
    model = timm.create_model(
        "eva02_large_patch14_224", pretrained=False, num_classes=0, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS,
        img_size=IMAGE_SIZE, patch_size=PATCH_SIZE, dynamic_img_size=True, scale_attn_inner=attention_inner_norm,
    ).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.2)
    return model


def our_eva02(timm_model, attention_inner_norm: bool, state_dict=None) -> EVA02Model:
    config = EVA02Config(
        hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
        intermediate_size=timm_model.blocks[0].mlp.fc2.in_features, patch_size=PATCH_SIZE, image_size=IMAGE_SIZE,
        pretrain_grid_size=16, attention_inner_norm=attention_inner_norm,
    )
    model = EVA02Model(config).eval()
    model.load_state_dict(convert_eva02_state_dict(state_dict or timm_model.state_dict()), strict=True)
    return model


def our_block_outputs(model: EVA02Model, pixel_values: torch.Tensor) -> list[torch.Tensor]:
    hidden_states, rope = model.embed(pixel_values)
    outputs = []
    for layer in model.layers:
        hidden_states = layer(hidden_states, rope=rope)
        outputs.append(hidden_states)
    return outputs


def max_difference_to_timm(timm_model, model: EVA02Model) -> float:
    pixel_values = torch.randn(2, 3, *INPUT_SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = our_block_outputs(model, pixel_values)
        theirs = timm_model.forward_intermediates(
            pixel_values, indices=DEPTH, norm=False, return_prefix_tokens=True, output_fmt="NLC",
            intermediates_only=True,
        )
        features = timm_model.forward_features(pixel_values)  # average-pooling models: no norm before the pool
    assert len(theirs) == DEPTH
    differences = []
    for our_tokens, (patches, prefix) in zip(ours, theirs):
        assert our_tokens.shape == (2, 1 + 3 * 5, WIDTH)
        differences.append((our_tokens - torch.cat([prefix, patches], dim=1)).abs().max().item())
    differences.append((ours[-1] - features).abs().max().item())
    return max(differences)


@pytest.mark.parametrize("attention_inner_norm", [False, True], ids=["mim", "inner-norm"])
def test_layer_loop_equals_timm_at_a_non_native_non_square_size(timm, attention_inner_norm):
    timm_model = timm_eva02(timm, attention_inner_norm)
    difference = max_difference_to_timm(timm_model, our_eva02(timm_model, attention_inner_norm))
    print(f"EVA02 vs timm forward_intermediates, inner norm {attention_inner_norm}: max |diff| = {difference:.3g}")
    assert difference <= ATOL


def test_eva_original_names_give_timm_numbers(timm):
    """EVA's names, converted by us, and the same tensors converted by timm's own checkpoint filter, agree."""
    from timm.models.eva import checkpoint_filter_fn

    timm_model = timm_eva02(timm, attention_inner_norm=False)
    renames = {".attn.q_proj.bias": ".attn.q_bias", ".attn.v_proj.bias": ".attn.v_bias", ".mlp.fc1_g.": ".mlp.w1.",
               ".mlp.fc1_x.": ".mlp.w2.", ".mlp.norm.": ".mlp.ffn_ln.", ".mlp.fc2.": ".mlp.w3."}
    eva_names = {}
    for key, value in timm_model.state_dict().items():
        for timm_part, eva_part in renames.items():
            key = key.replace(timm_part, eva_part)
        eva_names[key.replace("fc_norm.", "norm.")] = value
    eva_names["mask_token"] = torch.zeros(1, 1, WIDTH)
    refiltered = checkpoint_filter_fn(eva_names, timm_model)
    timm_model.load_state_dict(refiltered, strict=True)
    model = our_eva02(timm_model, attention_inner_norm=False, state_dict=eva_names)
    assert max_difference_to_timm(timm_model, model) <= ATOL


def test_position_table_resample_and_rope_match_timms(timm):
    from timm.layers import resample_abs_pos_embed

    timm_model = timm_eva02(timm, attention_inner_norm=False)
    table, grid = timm_model.pos_embed.detach(), (3, 5)
    ours = resize_position_table(table, grid)
    torch.testing.assert_close(ours, resample_abs_pos_embed(table, new_size=grid, num_prefix_tokens=1), rtol=0, atol=0)
    # The oracle size exercises antialias: without it the table differs.
    plain = resample_abs_pos_embed(table, new_size=grid, num_prefix_tokens=1, antialias=False)
    assert (ours - plain).abs().max() > 100 * ATOL
    torch.testing.assert_close(resize_position_table(table, grid, "eva"), plain, rtol=0, atol=0)

    sin, cos = timm_model.rope.get_embed(shape=grid).chunk(2, dim=-1)
    our_cos, our_sin = our_eva02(timm_model, attention_inner_norm=False).rope(grid, torch.device("cpu"))
    torch.testing.assert_close(our_cos, cos, rtol=0, atol=1e-6)
    torch.testing.assert_close(our_sin, sin, rtol=0, atol=1e-6)


# ---- DINOv2, CLIP and SAM: the publishers' original files through our converters and through timm's filters -------
class OriginalFormatOracle(NamedTuple):
    """timm's architecture for a family (shrunk to test_encoder_key_maps' tiny sizes by `overrides`), the timm module
    whose `checkpoint_filter_fn` reads the publisher's file (and whose run-time position resize is set to
    transformers' form), and the input sizes compared: the native one first."""

    timm_name: str
    timm_module: str
    overrides: dict
    input_sizes: tuple[tuple[int, int], ...]


# DINOv2 and CLIP: stored grid 28 / 14 = 2 x 2, also compared at a 3 x 5 input grid. SAM: its native size only
# (transformers' forward refuses others). OpenAI's CLIP runs QuickGELU: timm's plain `vit_large_patch14_clip_224`
# (GELU, its `.openai` tag notes this) would not match the weights, the `quickgelu` variant does.
ORIGINAL_FORMAT_ORACLES = {
    "dinov2": OriginalFormatOracle(
        "vit_large_patch14_dinov2", "vision_transformer", dict(img_size=28, dynamic_img_size=True, num_classes=0),
        ((28, 28), (42, 70)),
    ),
    "clip_vision_model": OriginalFormatOracle(  # num_classes: the filter turns OpenAI's `visual.proj` into a head
        "vit_large_patch14_clip_quickgelu_224", "vision_transformer",
        dict(img_size=28, dynamic_img_size=True, num_classes=original_formats.CLIP_PROJECTION), ((28, 28), (42, 70)),
    ),
    "sam_vision_model": OriginalFormatOracle(
        "samvit_huge_patch16", "vision_transformer_sam",
        dict(img_size=64, window_size=original_formats.SAM_WINDOW, global_attn_indexes=[1], mlp_ratio=2,
             neck_chans=original_formats.SAM_NECK, num_classes=0),
        ((64, 64),),
    ),
}


def timm_model_from_original(timm, family: str, original: dict[str, torch.Tensor]):
    """timm's tiny model of `family`, filled from the original state dict by timm's own checkpoint filter."""
    oracle = ORIGINAL_FORMAT_ORACLES[family]
    model = timm.create_model(
        oracle.timm_name, pretrained=False, embed_dim=original_formats.WIDTH, depth=original_formats.LAYERS,
        num_heads=original_formats.HEADS, **oracle.overrides,
    ).eval()
    filter_fn = importlib.import_module(f"timm.models.{oracle.timm_module}").checkpoint_filter_fn
    model.load_state_dict(filter_fn(dict(original), model), strict=True)  # a copy: the DINOv2 filter pops keys
    return model


@pytest.mark.parametrize("family", ORIGINAL_FORMAT_ORACLES)
def test_original_file_through_our_converter_equals_timms_loader(timm, tmp_path, monkeypatch, family):
    """The publisher's file given as `backbone` (our key converter, then our layer loop with the identity adapter)
    gives timm's last-layer patch tokens (no final norm), timm having read the same file through its own filter.

    What timm's filters do with these formats: Meta's DINOv2 (recognised by `mask_token`, which it drops) keeps its
    names; OpenAI's `visual.*` keeps the image tower, adds the class embedding once (cls token + its position, as CLIP
    and transformers do; the DGSS code adds it twice) and needs a head for `visual.proj`; SAM's `image_encoder.*`
    drops the prompt encoder and mask decoder and renames only `mlp.lin*`.

    At a non-native grid timm resizes the position table bicubically with antialias, which in torch is another cubic
    kernel (a = -0.5) even when upsampling; transformers' DINOv2 and CLIP (our "library" form) resize without it
    (a = -0.75): 0.12 apart on this DINOv2 table (2 x 2 -> 3 x 5), 5.2 after two layers. So the non-native
    comparison sets timm's run-time resize to antialias=False; everything else is timm's.
    """
    oracle = ORIGINAL_FORMAT_ORACLES[family]
    original, _, library_model = original_formats.FAMILIES[family]
    timm_model = timm_model_from_original(timm, family, original())
    timm_module = importlib.import_module(f"timm.models.{oracle.timm_module}")
    if hasattr(timm_module, "resample_abs_pos_embed"):
        resize = timm_module.resample_abs_pos_embed
        monkeypatch.setattr(timm_module, "resample_abs_pos_embed", functools.partial(resize, antialias=False))
    path = tmp_path / "original.pth"
    torch.save(original(), path)
    last = original_formats.LAYERS - 1
    model = frozen_model(str(path), backbone_config=library_model().config, out_indices=[0, 0, last, last])
    for size in oracle.input_sizes:
        pixel_values = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            (theirs,) = timm_model.forward_intermediates(pixel_values, indices=[last], norm=False, output_fmt="NCHW",
                                                         intermediates_only=True)
        ours = feature_at_stride_16(model, pixel_values)
        grid = [side // model.visual_encoder.patch_size for side in size]
        assert ours.shape == theirs.shape == (2, original_formats.WIDTH, *grid)
        difference = (ours - theirs).abs().max().item()
        print(f"{family} original file at {size}, ours vs timm: max |diff| = {difference:.3g}")
        assert difference <= ATOL
