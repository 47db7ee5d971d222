"""DINOv2, CLIP, SAM and EVA02 as frozen visual encoders: layer-loop parity with the library models, the position and
patch-kernel resizes against closed forms, and every adapter type on every family."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, CLIPVisionModel, Dinov2Model, SamVisionModel

from modeling_spectralmoe import EVA02Model, SpectralMoEConfig, SpectralMoEForSemanticSegmentation
from modeling_spectralmoe.configuration_spectralmoe import ADAPTER_TYPES

from .conftest import (
    assert_only_adapter_and_head_train,
    randomize_adapter,
    save_tiny_clip,
    save_tiny_depth_model,
    save_tiny_dinov2,
    save_tiny_eva02,
    save_tiny_sam,
    tiny_config,
)
from .test_encoder_key_maps import FAMILIES as ORIGINAL_CHECKPOINTS


FAMILIES = {"dinov2": save_tiny_dinov2, "clip": save_tiny_clip, "sam": save_tiny_sam, "eva02": save_tiny_eva02}
LIBRARY_CLASSES = {"dinov2": Dinov2Model, "clip": CLIPVisionModel, "sam": SamVisionModel, "eva02": EVA02Model}
LAST_LAYER_AT_STRIDE_16 = [0, 1, 3, 3]  # the third feature map (stride 16, not resized) is the last layer's


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    """Tiny saved checkpoints of each family (patch 16) and of the depth model."""
    root = tmp_path_factory.mktemp("families")
    saved = {family: save(root / family) for family, save in FAMILIES.items()}
    saved["depth"] = save_tiny_depth_model(root / "depth")
    return saved


def frozen_model(folder: str, depth: str | None = None, **overrides) -> SpectralMoEForSemanticSegmentation:
    """A model with the identity adapter (`"frozen"`) and the encoder's released weights."""
    settings = {"adapter_type": "frozen", "out_indices": LAST_LAYER_AT_STRIDE_16, **overrides}
    model = SpectralMoEForSemanticSegmentation(tiny_config(folder, depth, **settings)).eval()
    model.load_pretrained_encoders()
    return model


def feature_at_stride_16(model, pixel_values: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.encode(pixel_values)[0][2]


@pytest.mark.parametrize("family, size", [("dinov2", (48, 80)), ("clip", (48, 80)), ("sam", (64, 64)),
                                          ("eva02", (48, 80))])
def test_layer_loop_equals_the_library_model(folders, family, size):
    """DINOv2, CLIP and EVA02 (the package's model; timm is its oracle in test_timm_oracle) at a non-native, non-square
    size (the model's own position interpolation); SAM at its native size (its forward refuses others)."""
    model = frozen_model(folders[family])
    pixel_values = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    library = LIBRARY_CLASSES[family].from_pretrained(folders[family]).eval()
    extra = {"interpolate_pos_encoding": True} if family == "clip" else {}
    with torch.no_grad():
        last = library(pixel_values, output_hidden_states=True, **extra).hidden_states[-1]
    grid = (size[0] // 16, size[1] // 16)
    expected = last.permute(0, 3, 1, 2) if family == "sam" else last[:, 1:].transpose(1, 2).reshape(2, 32, *grid)
    torch.testing.assert_close(feature_at_stride_16(model, pixel_values), expected, rtol=1e-5, atol=1e-5)


def zero_input_tokens(model, size=(48, 80)) -> torch.Tensor:
    """The embedded tokens of an all-zero image: the patch kernel contributes only its bias."""
    with torch.no_grad():
        return model.visual_encoder.embed(torch.zeros(1, 3, *size))[0]


def grid_of(table: torch.Tensor, side: int) -> torch.Tensor:
    """(1, side * side, D) -> (1, D, side, side)."""
    return table.reshape(1, side, side, -1).permute(0, 3, 1, 2)


def test_dinov2_position_interpolation_switch(folders):
    library_form = zero_input_tokens(frozen_model(folders["dinov2"]))
    dgss_form = zero_input_tokens(frozen_model(folders["dinov2"], backbone_position_interpolation="dgss"))
    embeddings = Dinov2Model.from_pretrained(folders["dinov2"]).embeddings
    bias, table = embeddings.patch_embeddings.projection.bias, grid_of(embeddings.position_embeddings[:, 1:], 4)
    with torch.no_grad():
        for tokens, resized in (
            (library_form, F.interpolate(table, size=(3, 5), mode="bicubic", align_corners=False)),
            (dgss_form, F.interpolate(table, scale_factor=(3.1 / 4, 5.1 / 4), mode="bicubic", antialias=False)),
        ):
            assert resized.shape[-2:] == (3, 5)
            torch.testing.assert_close(tokens[:, 1:], resized.flatten(2).transpose(1, 2) + bias)
            torch.testing.assert_close(tokens[:, 0], embeddings.cls_token[:, 0] + embeddings.position_embeddings[:, 0])
    assert not torch.allclose(library_form, dgss_form)


@pytest.mark.parametrize("interpolation, mode", [("library", "bicubic"), ("dgss", "bilinear")])
@pytest.mark.parametrize("class_twice", [False, True])
def test_clip_position_interpolation_and_class_embedding_switches(folders, interpolation, mode, class_twice):
    model = frozen_model(folders["clip"], backbone_position_interpolation=interpolation,
                         clip_class_embedding_twice=class_twice)
    embeddings = model.visual_encoder.model.embeddings
    table = embeddings.position_embedding.weight[None]
    with torch.no_grad():
        patches = F.interpolate(grid_of(table[:, 1:], 4), size=(3, 5), mode=mode, align_corners=False)
        cls_token = (2 if class_twice else 1) * embeddings.class_embedding + table[:, :1]
        expected = torch.cat([cls_token, patches.flatten(2).transpose(1, 2)], dim=1)
        expected = model.visual_encoder.model.pre_layrnorm(expected)
    torch.testing.assert_close(zero_input_tokens(model), expected)


@pytest.mark.parametrize("interpolation, antialias", [("library", True), ("dgss", False)])
def test_eva02_position_interpolation_switch(folders, interpolation, antialias):
    """EVA02's own run-time resize: timm's antialiased bicubic by default, EVA's plain bicubic for the DGSS form."""
    model = frozen_model(folders["eva02"], backbone_position_interpolation=interpolation)
    embeddings = model.visual_encoder.model.embeddings
    table = embeddings.position_embeddings
    with torch.no_grad():
        patches = F.interpolate(grid_of(table[:, 1:], 4), size=(3, 5), mode="bicubic", antialias=antialias,
                                align_corners=False).flatten(2).transpose(1, 2) + embeddings.patch_embeddings.bias
        expected = torch.cat([embeddings.cls_token + table[:, :1], patches], dim=1)
    torch.testing.assert_close(zero_input_tokens(model), expected)


def test_sam_position_grid_is_resized_bicubically_at_other_sizes(folders):
    model = frozen_model(folders["sam"])
    encoder = model.visual_encoder.model.vision_encoder
    with torch.no_grad():
        expected = F.interpolate(encoder.pos_embed.permute(0, 3, 1, 2), size=(3, 5), mode="bicubic",
                                 align_corners=False).permute(0, 2, 3, 1) + encoder.patch_embed.projection.bias
    tokens = zero_input_tokens(model)
    assert tokens.shape == (1, 3, 5, 32)
    torch.testing.assert_close(tokens, expected)
    assert model.visual_encoder.adapter_sites == {1: 1, 3: 3}  # the global blocks, paired 1:1 by relative depth


@pytest.mark.parametrize("family", FAMILIES)
def test_released_weights_are_fitted_to_the_configured_patch_grid_and_bands(tmp_path, family):
    """A patch-14 (DINOv2, CLIP, EVA02) or 64-px (SAM) RGB release loaded into a 4-band, patch-16, 96-px encoder: the
    kernel is widened cyclically and resized bicubically, the position table resized to the 6 x 6 grid (bilinear for
    CLIP, else bicubic), SAM's global relative-position tables linearly to 11 entries."""
    if family == "sam":
        folder = save_tiny_sam(tmp_path / family)
    else:
        folder = FAMILIES[family](tmp_path / family, patch_size=14, image_size=56)
    backbone_config = AutoConfig.from_pretrained(folder)
    backbone_config = getattr(backbone_config, "vision_config", None) or backbone_config
    backbone_config.patch_size, backbone_config.image_size = 16, 96
    model = frozen_model(folder, backbone_config=backbone_config, num_channels=4, depth_rgb_bands=[1, 2, 3],
                         out_indices=None)
    released = LIBRARY_CLASSES[family].from_pretrained(folder).state_dict()
    loaded = model.visual_encoder.model.state_dict()
    kernel, positions = {
        "dinov2": ("embeddings.patch_embeddings.projection.weight", "embeddings.position_embeddings"),
        "clip": ("embeddings.patch_embedding.weight", "embeddings.position_embedding.weight"),
        "sam": ("vision_encoder.patch_embed.projection.weight", "vision_encoder.pos_embed"),
        "eva02": ("embeddings.patch_embeddings.weight", "embeddings.position_embeddings"),
    }[family]
    expected_kernel = F.interpolate(released[kernel][:, [0, 1, 2, 0]], size=(16, 16), mode="bicubic",
                                    align_corners=False)
    torch.testing.assert_close(loaded[kernel], expected_kernel)
    if family == "sam":
        table = released[positions].permute(0, 3, 1, 2)
        expected = F.interpolate(table, size=(6, 6), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
        rel_pos = released["vision_encoder.layers.1.attn.rel_pos_h"]
        expected_rel_pos = F.interpolate(rel_pos.t()[None], size=11, mode="linear")[0].t()
        torch.testing.assert_close(loaded["vision_encoder.layers.1.attn.rel_pos_h"], expected_rel_pos)
    else:
        table = released[positions].reshape(1, -1, 32)
        mode = "bilinear" if family == "clip" else "bicubic"
        patches = F.interpolate(grid_of(table[:, 1:], 4), size=(6, 6), mode=mode, align_corners=False)
        expected = torch.cat([table[:, :1], patches.flatten(2).transpose(1, 2)], dim=1).reshape(loaded[positions].shape)
    torch.testing.assert_close(loaded[positions], expected)


CASES = [(family, adapter_type) for family in FAMILIES for adapter_type in ADAPTER_TYPES]
VPT_REFUSALS = {"sam": "token grid with windowed attention"}


@pytest.mark.parametrize("family, adapter_type", CASES, ids=[f"{f}-{a}" for f, a in CASES])
def test_every_adapter_trains_one_step_on_every_family_with_four_bands(folders, family, adapter_type):
    config = tiny_config(folders[family], folders["depth"], adapter_type=adapter_type, num_channels=4,
                         depth_rgb_bands=[1, 2, 3], vpt_num_prompts=4, adaptformer_bottleneck=8, lora_rank=2,
                         decoder_layers=1, train_num_points=64)
    torch.manual_seed(0)
    if adapter_type == "vpt" and family in VPT_REFUSALS:
        with pytest.raises(ValueError, match=f"VPT inserts prompt tokens .* cannot take: .*{VPT_REFUSALS[family]}"):
            SpectralMoEForSemanticSegmentation(config)
        return
    model = SpectralMoEForSemanticSegmentation(config).train()
    randomize_adapter(model)
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(2, 4, 32, 32, generator=generator)
    labels = torch.randint(0, 3, (2, 32, 32), generator=generator)
    trained = {name: parameter.detach().clone() for name, parameter in model.named_parameters()
               if parameter.requires_grad}
    optimizer = torch.optim.SGD([parameter for parameter in model.parameters() if parameter.requires_grad], lr=0.1)
    loss = model(pixel_values=pixel_values, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert_only_adapter_and_head_train(model)
    optimizer.step()
    changed = {name for name, parameter in model.named_parameters() if name in trained
               and not torch.equal(parameter, trained[name])}
    adapter_changed = {name for name in changed if not name.startswith("decode_head.")}
    assert adapter_changed, "no adapter parameter moved"


def test_sam_adapters_size_by_the_global_blocks(folders):
    config = tiny_config(folders["sam"], folders["depth"], adapter_type="spectralmoe", num_channels=4,
                         depth_rgb_bands=[1, 2, 3])
    model = SpectralMoEForSemanticSegmentation(config)
    assert config.num_adapted_layers == 2 and model.adapter.experts_a.shape[0] == 2
    assert config.out_indices == [0, 1, 1, 3]  # not four global blocks: the plain-ViT default


@pytest.mark.parametrize("adapter_type", ["spectralmoe", "depthforge"])
def test_a_sam_wider_than_the_depth_encoder_needs_the_depth_projection(folders, adapter_type):
    """SAM-H (1280) against PromptDA-L (1024): refused, unless a trained projection maps the depth tokens to the
    visual width; it then trains with the adapter and is saved with it."""
    backbone_config = AutoConfig.from_pretrained(folders["sam"]).vision_config
    backbone_config.hidden_size = 64
    settings = dict(backbone_config=backbone_config, adapter_type=adapter_type, num_channels=4,
                    depth_rgb_bands=[1, 2, 3], decoder_layers=1, train_num_points=64)
    with pytest.raises(ValueError, match="hidden_size=64, 4 layers; depth has hidden_size=32.*depth_projection=True"):
        tiny_config(folders["sam"], folders["depth"], **settings)
    assert SpectralMoEForSemanticSegmentation(tiny_config(folders["sam"], None, **{**settings, "adapter_type": "rein"}))

    torch.manual_seed(0)
    model = SpectralMoEForSemanticSegmentation(tiny_config(folders["sam"], folders["depth"], depth_projection=True,
                                                           **settings)).train()
    assert (model.depth_projection.in_features, model.depth_projection.out_features) == (32, 64)
    randomize_adapter(model)
    labels = torch.randint(0, 3, (2, 32, 32))
    model(pixel_values=torch.randn(2, 4, 32, 32), labels=labels).loss.backward()
    assert_only_adapter_and_head_train(model)
    assert model.depth_projection.weight.grad.abs().sum() > 0  # the depth tokens reach the adapter through it
    assert {"depth_projection.weight", "depth_projection.bias"} <= set(model.trained_state_dict())


@pytest.mark.parametrize("family", ORIGINAL_CHECKPOINTS)
def test_original_checkpoint_files_load_through_their_key_converter(tmp_path, family):
    """`backbone` naming a publisher's original file (synthetic, under Meta's, OpenAI's or SAM's names) fills the
    encoder exactly as the converted tensors loaded into the transformers class."""
    original, convert, tiny_model = ORIGINAL_CHECKPOINTS[family]
    path = tmp_path / "original.pth"
    torch.save(original(), path)
    reference = tiny_model()
    reference.load_state_dict(convert(original()))
    model = frozen_model(str(path), backbone_config=reference.config, out_indices=None)
    loaded = model.visual_encoder.model.state_dict()
    assert loaded.keys() == reference.state_dict().keys()
    for key, tensor in reference.state_dict().items():
        torch.testing.assert_close(loaded[key], tensor, rtol=0, atol=0, msg=key)


# ../shared/specs/BASELINES.md section 8, SAM-H: token methods at the 4 global blocks, in-layer methods in all 32
# layers; LoRA (fused qkv, r = 8) and AdaptFormer (b = 64) plus their learned 100 x 256 query table, FADA plus its
# Haar filters (4 x 1280 x 2 x 2).
SAM_H_ADAPTER_SIZES = {
    "rein": 3_892_481, "set": 7_683_841, "fada": 2_424_321 + 20_480, "lora": 1_310_720 + 25_600,
    "adaptformer": 5_285_888 + 25_600,
}


def test_sam_h_adapter_sizes_on_the_meta_device():
    for adapter_type, size in SAM_H_ADAPTER_SIZES.items():
        config = SpectralMoEConfig(backbone="facebook/sam-vit-huge", adapter_type=adapter_type, id2label={0: "a"},
                                   band_names=["NIR", "R", "G", "B"])
        with torch.device("meta"):
            model = SpectralMoEForSemanticSegmentation(config)
        injected = set(model.adapter.encoder_parameter_names())
        adapter = sum(parameter.numel() for parameter in model.adapter.parameters())
        adapter += sum(parameter.numel() for name, parameter in model.visual_encoder.model.named_parameters()
                       if name in injected)
        assert (adapter_type, adapter) == (adapter_type, size)
        assert config.out_indices == [7, 15, 23, 31] and list(model.visual_encoder.adapter_sites) == [7, 15, 23, 31]


def test_an_eva02_folder_resolves_before_the_eva02_model_file_is_imported(folders):
    """A new process that imports only the configuration names an EVA02 folder as `backbone`."""
    script = ("import sys; from modeling_spectralmoe import SpectralMoEConfig; "
              f"config = SpectralMoEConfig(backbone={folders['eva02']!r}, adapter_type='rein'); "
              "assert 'modeling_spectralmoe.modeling_eva02' not in sys.modules; "
              "print(config.backbone_config.model_type)")
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                               cwd=Path(__file__).resolve().parents[1], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert completed.stdout.strip() == "eva02", completed.stderr[-2000:]
