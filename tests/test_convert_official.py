"""Conversion of the authors' released checkpoint (mmseg) and converted backbone (Meta DINOv3 + Depth Anything DINOv2
names) into a SpectralMoE model folder, on synthetic files built from the golden tensors and tiny random encoders."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import DINOv3ViTConfig, DINOv3ViTModel, Dinov2Config, Dinov2Model

from modeling_spectralmoe import convert_official
from modeling_spectralmoe.convert_official import (
    FBP_CROSS_SENSOR_MEAN,
    FBP_CROSS_SENSOR_STD,
    FIVE_BILLION_PIXELS_CLASSES,
    convert_backbone_state_dict,
    convert_official_checkpoint,
    convert_released_state_dict,
    main,
    match_depth_position_grid,
    released_config,
)
from modeling_spectralmoe.frozen_encoders import resample_patch_kernel
from modeling_spectralmoe.image_processing_spectralmoe import SpectralMoEImageProcessor
from modeling_spectralmoe.mask2former_head import SpectralMoEMask2FormerHead
from modeling_spectralmoe.modeling_spectralmoe import SpectralMoEForSemanticSegmentation
from modeling_spectralmoe.spectralmoe_adapter import SpectralMoEAdapter

from .conftest import golden_tensors


def tiny_visual_config(**overrides) -> DINOv3ViTConfig:
    sizes = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=16,
        num_register_tokens=4, image_size=64,
    )
    return DINOv3ViTConfig(**{**sizes, **overrides})


def tiny_depth_config(**overrides) -> Dinov2Config:
    sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=14, image_size=56)
    return Dinov2Config(**{**sizes, **overrides})


def golden_overrides() -> dict:
    """The sizes of both golden files: adapter L=2, D=32, E=3, r=4, m=10; head width 32, 10 queries, 5 classes."""
    return dict(
        backbone_config=tiny_visual_config(), depth_backbone_config=tiny_depth_config(), num_experts=3, expert_rank=4,
        num_expert_tokens=10, num_queries=10, id2label={i: str(i) for i in range(5)}, decoder_hidden_dim=32,
        decoder_num_heads=8, pixel_decoder_layers=2, pixel_decoder_ffn_dim=64, decoder_layers=3, decoder_ffn_dim=64,
    )


def golden_params(name: str) -> dict[str, torch.Tensor]:
    return {k[len("param.") :]: v for k, v in golden_tensors(name).items() if k.startswith("param.")}


def released_state_dict(query_dim: int = 16) -> dict[str, torch.Tensor]:
    """The released checkpoint's `state_dict` assembled from the golden adapter and head. The two goldens come from
    different toy models: the adapter's query width is 16, the head's 32. For one model, `query_dim=32` replaces the
    adapter's `transform` / `merge` (which only shape the query positions, not the adapted tokens) by random ones."""
    adapter = golden_params("depthmoe_reference")
    if query_dim != adapter["transform.bias"].shape[0]:
        generator = torch.Generator().manual_seed(0)
        shapes = {
            "transform.weight": (query_dim, 32), "transform.bias": (query_dim,),
            "merge.weight": (query_dim, 3 * query_dim), "merge.bias": (query_dim,),
        }
        adapter.update({key: torch.randn(shape, generator=generator) for key, shape in shapes.items()})
    state_dict = {f"backbone.depthmoe.{key}": value for key, value in adapter.items()}
    state_dict["backbone.depthmoe.mean"] = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    state_dict["backbone.depthmoe.std"] = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    state_dict.update({f"decode_head.{k}": v for k, v in golden_params("mask2former_head_reference").items()})
    return state_dict


def save_released(path: Path, state_dict: dict[str, torch.Tensor]) -> Path:
    torch.save({"state_dict": state_dict, "meta": {"CLASSES": list(FIVE_BILLION_PIXELS_CLASSES), "iter": 80000}}, path)
    return path


def meta_block(weights, source: str, target: str, mlp_names: tuple[str, str], key_bias: torch.Tensor | None) -> dict:
    """One transformers layer under Meta's / DINOv2's block names (the converter's inverse, written independently)."""
    qkv = [weights[f"{source}attention.{x}_proj.weight"] for x in "qkv"]
    q_bias, v_bias = weights[f"{source}attention.q_proj.bias"], weights[f"{source}attention.v_proj.bias"]
    k_bias = weights.get(f"{source}attention.k_proj.bias", key_bias)
    block = {"attn.qkv.weight": torch.cat(qkv), "attn.qkv.bias": torch.cat([q_bias, k_bias, v_bias])}
    block.update({f"attn.proj.{p}": weights[f"{source}attention.o_proj.{p}"] for p in ("weight", "bias")})
    block.update({f"norm{n}.{p}": weights[f"{source}norm{n}.{p}"] for n in (1, 2) for p in ("weight", "bias")})
    block.update({f"ls{n}.gamma": weights[f"{source}layer_scale{n}.lambda1"] for n in (1, 2)})
    for fc, name in zip(("fc1", "fc2"), mlp_names):
        block.update({f"mlp.{fc}.{p}": weights[f"{source}mlp.{name}.{p}"] for p in ("weight", "bias")})
    return {f"{target}{key}": value for key, value in block.items()}


def meta_layout(visual: DINOv3ViTModel, depth: Dinov2Model) -> dict[str, torch.Tensor]:
    """The authors' converted-backbone layout of two transformers encoders: Meta's DINOv3 names, and the Depth Anything
    model (`depth_anything.`) with its DINOv2 encoder under `pretrained.` and an (unused) depth head."""
    v, d = visual.state_dict(), depth.state_dict()
    hidden = visual.config.hidden_size
    layout = {
        "cls_token": v["embeddings.cls_token"], "storage_tokens": v["embeddings.register_tokens"],
        "mask_token": v["embeddings.mask_token"].reshape(1, hidden), "norm.weight": v["norm.weight"],
        "norm.bias": v["norm.bias"], "rope_embed.periods": visual.rope_embeddings.inv_freq.reciprocal(),
        **{f"patch_embed.proj.{p}": v[f"embeddings.patch_embeddings.{p}"] for p in ("weight", "bias")},
    }
    for i in range(visual.config.num_hidden_layers):
        key_bias = torch.randn(hidden)  # Meta's fused bias has a key part, masked to zero by `bias_mask`
        layout.update(meta_block(v, f"model.layer.{i}.", f"blocks.{i}.", ("up_proj", "down_proj"), key_bias))
        bias_mask = torch.ones(3 * hidden)
        bias_mask[hidden : 2 * hidden] = 0
        layout[f"blocks.{i}.attn.qkv.bias_mask"] = bias_mask
    prefix = "depth_anything.pretrained."
    depth_names = {
        "cls_token": "embeddings.cls_token", "mask_token": "embeddings.mask_token",
        "pos_embed": "embeddings.position_embeddings", "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias",
        "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    }
    layout.update({prefix + theirs: d[ours] for theirs, ours in depth_names.items()})
    for i in range(depth.config.num_hidden_layers):
        layout.update(meta_block(d, f"encoder.layer.{i}.", f"{prefix}blocks.{i}.", ("fc1", "fc2"), None))
    layout["depth_anything.depth_head.projects.0.weight"] = torch.randn(8, 32, 1, 1)
    return layout


def golden_layer_inputs(golden: dict[str, torch.Tensor], layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    return golden[f"layer{layer}.input_visual"], golden[f"layer{layer}.input_depth"]


def randomized(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random (layer scales and biases included), so that each one reaches the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    """Tiny random DINOv3 and DINOv2 and their converted-backbone file."""
    visual = randomized(DINOv3ViTModel(tiny_visual_config()), seed=1)
    depth = randomized(Dinov2Model(tiny_depth_config()), seed=2)
    path = tmp_path_factory.mktemp("backbone") / "converted_backbone.pth"
    torch.save(meta_layout(visual, depth), path)
    return visual, depth, path


def test_released_config_is_the_published_setting():
    config = released_config()
    assert config.perceptual_map == "official_sum_product" and config.fusion == "official_diagonal"
    assert config.depth_grid_alignment == "resample_patch_embed"
    assert config.num_channels == 4 and config.band_names == ["NIR", "R", "G", "B"]
    assert config.wavelengths == [0.83, 0.665, 0.56, 0.49]
    assert config.depth_rgb_bands == [1, 2, 3] and config.patch_embed_expansion == "cyclic"
    assert (config.num_experts, config.top_k, config.num_labels) == (6, 1, 24)
    assert config.id2label[0] == "industrial area" and config.id2label[23] == "airport"
    assert config.backbone == "facebook/dinov3-vitl16-pretrain-lvd1689m"
    assert config.depth_backbone == "depth-anything/prompt-depth-anything-vitl-hf"
    with torch.device("meta"):
        model = SpectralMoEForSemanticSegmentation(config)
    assert sum(p.numel() for p in model.adapter.parameters()) == 5_737_985  # SPEC §2 at ViT-L size


def test_adapter_and_head_parts_reproduce_the_goldens():
    """The unmodified goldens (adapter query width 16, head width 32) through the converter's per-part mapping."""
    weights, report = convert_released_state_dict(released_state_dict(), num_layers=2, num_experts=3)
    assert set(report) == set(released_state_dict())
    assert report["backbone.depthmoe.mean"].startswith("dropped: ")
    assert report["decode_head.cls_embed.weight"] == "mapped -> class_predictor.weight"
    part = lambda prefix: {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}  # noqa: E731

    golden = golden_tensors("depthmoe_reference")
    adapter = SpectralMoEAdapter(
        num_layers=2, hidden_size=32, num_experts=3, expert_rank=4, num_expert_tokens=10, query_dim=16,
        perceptual_map="official_sum_product", fusion="official_diagonal",
    )
    adapter.load_state_dict(part("adapter."), strict=True)
    adapter.eval()
    with torch.no_grad():
        torch.testing.assert_close(adapter.query_embeddings(), golden["query_embed"], atol=1e-5, rtol=0)
        for layer in range(2):
            output, aux_loss = adapter(*golden_layer_inputs(golden, layer), layer, 5)
            torch.testing.assert_close(output, golden[f"layer{layer}.output_visual"], atol=1e-5, rtol=0)
            torch.testing.assert_close(aux_loss.reshape(1), golden[f"layer{layer}.aux_loss"], rtol=1e-6, atol=0)

    golden = golden_tensors("mask2former_head_reference")
    head = SpectralMoEMask2FormerHead(released_config(**golden_overrides()), in_channels=[32] * 4)
    head.load_state_dict(part("decode_head."), strict=True)
    head.eval()
    with torch.no_grad():
        outputs = head([golden[f"input.feature{i}"] for i in range(4)], golden["input.query_embed"])
        semantic = head.semantic_logits(outputs.class_queries_logits, outputs.masks_queries_logits, (64, 64))
    for i, stage in enumerate([*outputs.auxiliary_logits, outputs]):
        torch.testing.assert_close(stage["class_queries_logits"], golden[f"output.class_logits{i}"], atol=1e-4, rtol=0)
        torch.testing.assert_close(stage["masks_queries_logits"], golden[f"output.mask_logits{i}"], atol=1e-4, rtol=0)
    torch.testing.assert_close(semantic, golden["output.semantic_logits"], atol=1e-4, rtol=0)


def test_released_checkpoint_with_backbone_gives_a_complete_model(tmp_path, backbone):
    visual, depth, backbone_path = backbone
    checkpoint = save_released(tmp_path / "released.pth", released_state_dict(query_dim=32))
    report = convert_official_checkpoint(checkpoint, tmp_path / "model", backbone_path, golden_overrides())
    assert set(report.keys[str(checkpoint)]) == set(released_state_dict())
    assert set(report.keys[str(backbone_path)]) == set(meta_layout(visual, depth))
    fates = report.keys[str(backbone_path)]
    assert fates["depth_anything.depth_head.projects.0.weight"].startswith("dropped: ")
    assert fates["blocks.0.attn.qkv.bias_mask"].startswith("dropped: ")
    assert "key bias dropped" in fates["blocks.1.attn.qkv.bias"]
    assert "widened to 4 bands" in fates["patch_embed.proj.weight"]
    assert "resampled" in fates["depth_anything.pretrained.patch_embed.proj.weight"]
    assert "the complete model" in report.summary()

    model = SpectralMoEForSemanticSegmentation.from_pretrained(tmp_path / "model").eval()  # offline: encoders inside
    config = model.config
    assert config.encoder_weights_in_checkpoint and config.backbone == "facebook/dinov3-vitl16-pretrain-lvd1689m"
    assert (config.perceptual_map, config.fusion, config.depth_rgb_bands) == (
        "official_sum_product", "official_diagonal", [1, 2, 3]
    )
    processor = SpectralMoEImageProcessor.from_pretrained(tmp_path / "model")
    assert (list(processor.image_mean), list(processor.image_std)) == (FBP_CROSS_SENSOR_MEAN, FBP_CROSS_SENSOR_STD)

    golden = golden_tensors("depthmoe_reference")
    with torch.no_grad():
        for layer in range(2):
            output, _ = model.adapter(*golden_layer_inputs(golden, layer), layer, 5)
            torch.testing.assert_close(output, golden[f"layer{layer}.output_visual"], atol=1e-5, rtol=0)
        golden = golden_tensors("mask2former_head_reference")
        outputs = model.decode_head([golden[f"input.feature{i}"] for i in range(4)], golden["input.query_embed"])
        head = model.decode_head
        semantic = head.semantic_logits(outputs.class_queries_logits, outputs.masks_queries_logits, (64, 64))
        torch.testing.assert_close(semantic, golden["output.semantic_logits"], atol=1e-4, rtol=0)

        # The encoders are the tiny transformers models the file was made from. The cyclic 4th band (B) reuses the
        # first RGB kernel: with it zeroed, the 4-band encoder sees what the RGB one sees.
        pixel_values = torch.randn(2, 4, 64, 64, generator=torch.Generator().manual_seed(3))
        pixel_values[:, 3] = 0
        ours = model.visual_encoder.model(pixel_values).last_hidden_state
        torch.testing.assert_close(ours, visual(pixel_values[:, :3]).last_hidden_state, atol=1e-5, rtol=0)
        # The depth encoder runs on the visual patch-16 grid: a DINOv2 of patch 16 with the resampled kernel.
        reference = Dinov2Model(tiny_depth_config(patch_size=16, image_size=64)).eval()
        weights = depth.state_dict()
        kernel = "embeddings.patch_embeddings.projection.weight"
        reference.load_state_dict({**weights, kernel: resample_patch_kernel(weights[kernel], 16)})
        expected = reference(pixel_values[:, 1:], output_hidden_states=True).hidden_states[1:]
        for ours, theirs in zip(model.depth_encoder(pixel_values[:, 1:]), expected, strict=True):
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
        assert model(pixel_values).logits.shape == (2, 5, 64, 64)


def test_command_line_without_backbone_writes_adapter_and_head(tmp_path, monkeypatch, capsys):
    tiny_release = {**convert_official.RELEASED_SETTINGS, **golden_overrides()}
    monkeypatch.setattr(convert_official, "RELEASED_SETTINGS", tiny_release)
    checkpoint = save_released(tmp_path / "released.pth", released_state_dict(query_dim=32))
    main(["--checkpoint", str(checkpoint), "--output-dir", str(tmp_path / "model")])
    printed = capsys.readouterr().out
    assert "dropped backbone.depthmoe.mean" in printed and "adapter + head" in printed
    saved = load_file(tmp_path / "model" / "model.safetensors")
    assert {key.split(".")[0] for key in saved} == {"adapter", "decode_head"}
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert not config["encoder_weights_in_checkpoint"]
    assert config["depth_backbone"] == "depth-anything/prompt-depth-anything-vitl-hf"
    processor = json.loads((tmp_path / "model" / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == FBP_CROSS_SENSOR_MEAN
    card = (tmp_path / "model" / "README.md").read_text()
    front_matter = yaml.safe_load(card.split("---")[1])
    assert front_matter["library_name"] == "transformers" and front_matter["pipeline_tag"] == "image-segmentation"
    assert "model-index" not in front_matter  # nothing was measured here; the reported score is in the text only
    assert "66.19 mIoU" in card and "not been re-evaluated" in card


def test_depth_position_grid_follows_the_backbone_file():
    depth_config = tiny_depth_config()
    config = released_config(**{**golden_overrides(), "depth_backbone_config": depth_config})
    match_depth_position_grid(config, {"depth_anything.pretrained.pos_embed": torch.zeros(1, 1 + 8 * 8, 32)})
    assert config.depth_backbone_config.image_size == 8 * 14
    assert depth_config.image_size == 56  # the caller's config is left alone


@pytest.mark.parametrize(
    "edit, key",
    [
        ("drop", "backbone.depthmoe.experts_b.1.2"),
        ("drop", "decode_head.cls_embed.bias"),
        ("add", "backbone.depthmoe.prompt_tokens"),
        ("add", "auxiliary_head.conv_seg.weight"),
    ],
)
def test_released_checkpoint_with_missing_or_unknown_key_fails_naming_it(tmp_path, edit, key):
    state_dict = released_state_dict(query_dim=32)
    if edit == "drop":
        del state_dict[key]
    else:
        state_dict[key] = torch.zeros(1)
    checkpoint = save_released(tmp_path / "released.pth", state_dict)
    name = key.removeprefix("backbone.depthmoe.")  # the adapter's converter names keys inside its prefix
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        convert_official_checkpoint(checkpoint, tmp_path / "model", config_overrides=golden_overrides())


@pytest.mark.parametrize(
    "edit, key",
    [
        ("drop", "blocks.1.ls2.gamma"),
        ("drop", "depth_anything.pretrained.blocks.0.attn.qkv.weight"),
        ("add", "blocks.2.norm1.weight"),
        ("add", "depth_anything.pretrained.register_tokens"),
    ],
)
def test_backbone_with_missing_or_unknown_key_fails_naming_it(tmp_path, backbone, edit, key):
    visual, depth, _ = backbone
    layout = meta_layout(visual, depth)
    if edit == "drop":
        del layout[key]
    else:
        layout[key] = torch.zeros(1)
    torch.save(layout, tmp_path / "backbone.pth")
    checkpoint = save_released(tmp_path / "released.pth", released_state_dict(query_dim=32))
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        convert_official_checkpoint(checkpoint, tmp_path / "model", tmp_path / "backbone.pth", golden_overrides())


def test_backbone_accepts_the_register_tokens_spelling(backbone):
    visual, depth, _ = backbone
    layout = meta_layout(visual, depth)
    layout["register_tokens"] = layout.pop("storage_tokens")
    with torch.device("meta"):
        model = SpectralMoEForSemanticSegmentation(released_config(**golden_overrides()))
    weights, report = convert_backbone_state_dict(layout, model)
    assert report["register_tokens"] == "mapped -> visual_encoder.model.embeddings.register_tokens"
    torch.testing.assert_close(weights["visual_encoder.model.embeddings.register_tokens"], layout["register_tokens"])


class _RunsCode:
    """A pickle payload that creates a file when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    checkpoint = tmp_path / "released.pth"
    torch.save({"state_dict": {}, "meta": _RunsCode(marker)}, checkpoint)
    with pytest.raises(SystemExit, match="Refusing to load"):
        main(["--checkpoint", str(checkpoint), "--output-dir", str(tmp_path / "model")])
    assert not marker.exists()
    torch.load(checkpoint, weights_only=False)  # the payload is live: an unsafe load runs it
    assert marker.exists()
