"""The authors' released model end to end: their two files as published -> `spectralmoe-convert-official` -> the Auto
classes reproduce every stage of their forward pass (`golden/official_model_*`)."""

import collections
import importlib.util
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

from modeling_spectralmoe.conversion.mmengine_checkpoint import read_checkpoint
from modeling_spectralmoe.conversion.official_release import convert_official_checkpoint, main, release_config
from modeling_spectralmoe.data.benchmarks import PAPER_RESULTS, PAPER_TABLE, PAPER_URL
from modeling_spectralmoe.frozen_encoders import rope_periods

from .conftest import GOLDEN, golden_tensors
from .release_trace import trace_golden_inputs

RELEASED = GOLDEN / "official_model_released.pth"
BACKBONE = GOLDEN / "official_model_backbone.pth"
# The golden README's tolerances: tokens, feature maps and query embedding 1e-5; per-stage logits 1e-3; seg 1e-4.
needs_release = pytest.mark.skipif(not RELEASED.is_file(), reason=f"{RELEASED} is absent")
TOKEN_STAGES = ("visual_embeddings", "depth_embeddings", ".depth", "visual_block", "visual_adapted", "feature",
                "query_embed")


def assert_matches_golden(traced: dict[str, torch.Tensor], golden: dict[str, torch.Tensor]) -> None:
    """Every stage the golden file holds, at its tolerance; routed experts identical."""
    compared = [key for key in golden if key.startswith(("output.", "alt.output."))]
    assert len(compared) == 62
    for key in compared:
        actual, expected = traced[key], golden[key]
        if key.endswith("_expert"):
            assert torch.equal(actual, expected), key
        elif key.endswith("aux_loss"):
            torch.testing.assert_close(actual, expected, rtol=1e-6, atol=0, msg=key)
        elif key.endswith("seg_logits"):
            torch.testing.assert_close(actual, expected, rtol=0, atol=1e-4, msg=key)
        elif any(stage in key for stage in TOKEN_STAGES):
            torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5, msg=key)
        else:
            assert "class_logits" in key or "mask_logits" in key, key
            torch.testing.assert_close(actual, expected, rtol=0, atol=1e-3, msg=key)


@pytest.fixture(scope="module")
def golden():
    return golden_tensors("official_model_reference")


@pytest.fixture(scope="module")
def converted(golden, tmp_path_factory):
    """The release converted by the public command, exactly as a user runs it (no sizes, no statistics; the
    benchmark its card quotes the paper's score for: the golden README's setting)."""
    folder = tmp_path_factory.mktemp("release") / "spectralmoe-release"
    main(["--checkpoint", str(RELEASED), "--backbone", str(BACKBONE), "--output-dir", str(folder),
          "--paper-benchmark", "fbp_cross_sensor"])
    return folder


@pytest.fixture(scope="module")
def loaded(converted):
    model = AutoModelForSemanticSegmentation.from_pretrained(converted, trust_remote_code=True)
    processor = AutoImageProcessor.from_pretrained(converted, trust_remote_code=True)
    return model.eval(), processor


def test_converted_release_reproduces_every_stage_of_the_authors_model(golden, loaded):
    model, processor = loaded
    inputs = processor(golden["input.raw"].numpy(), input_data_format="channels_first", return_tensors="pt")
    assert torch.equal(inputs["pixel_values"], golden["input.pixel_values"])
    assert_matches_golden(trace_golden_inputs(model, golden), golden)


def test_saved_and_reloaded_in_a_fresh_process_reproduces_every_stage(golden, loaded, tmp_path):
    loaded[0].save_pretrained(tmp_path / "resaved")
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    script = Path(__file__).with_name("release_trace.py")
    completed = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "resaved"), str(GOLDEN / "official_model_reference.safetensors"),
         str(tmp_path / "traced.safetensors")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert_matches_golden(load_file(tmp_path / "traced.safetensors"), golden)


def test_everything_is_read_from_the_files(loaded):
    model, processor = loaded
    config = model.config
    assert (config.num_channels, config.depth_rgb_bands, config.num_labels, config.out_indices) == (4, [1, 2, 3], 24,
                                                                                                   [0, 1, 2, 3])
    assert (config.num_experts, config.top_k, config.expert_rank, config.num_expert_tokens) == (6, 1, 4, 10)
    assert (config.backbone_config.hidden_size, config.depth_backbone_config.num_hidden_layers) == (64, 4)
    assert config.id2label[23] == "class23" and config.fusion == "official_diagonal"
    assert processor.image_mean == [110.714, 85.357, 88.594, 82.444] and processor.image_std[0] == 72.38
    # The RoPE periods are the file's bfloat16 values, not the exact ones transformers would compute.
    periods = read_checkpoint(BACKBONE).state_dict["rope_embed.periods"]
    assert torch.equal(model.visual_encoder.rope_periods, periods.float())
    assert not torch.equal(periods.float(), rope_periods(config.backbone_config))


def test_release_card_quotes_the_papers_number_with_its_source(converted, loaded):
    metadata = ModelCard.load(converted / "README.md").data.to_dict()
    assert metadata["license"] == "apache-2.0" and metadata["inference"] is False
    assert metadata["metrics"] == ["mean_iou"] and "base_model" not in metadata  # encoders are in the folder
    (quoted,) = metadata["model-index"][0]["results"]  # nothing measured: only the paper's number
    assert quoted["source"] == {"name": PAPER_TABLE, "url": PAPER_URL}
    assert [metric["value"] for metric in quoted["metrics"]] == list(PAPER_RESULTS["fbp_cross_sensor"][1:])
    processor = loaded[1]
    assert f"| 0 | band 0 |  | {processor.image_mean[0]:g} | {processor.image_std[0]:g} |" in (
        converted / "README.md").read_text()
    assert {"stac-mlm.json", "pipeline_spectralmoe.py"} <= {path.name for path in converted.iterdir()}


def test_the_numerical_fixes_are_what_the_match_needs(golden, loaded):
    """Exact RoPE periods move the tokens from layer 0 on; transformers' position interpolation moves the depth tokens
    of the off-grid input."""
    model, _ = loaded
    stored = model.visual_encoder.rope_periods.clone()
    try:
        model.visual_encoder.rope_periods.copy_(rope_periods(model.config.backbone_config))
        traced = trace_golden_inputs(model, golden)
        assert (traced["output.layer0.visual_block"] - golden["output.layer0.visual_block"]).abs().max() > 1e-5
    finally:
        model.visual_encoder.rope_periods.copy_(stored)
    model.depth_encoder.position_interpolation = "transformers"
    try:
        traced = trace_golden_inputs(model, golden)
        assert (traced["alt.output.depth_embeddings"] - golden["alt.output.depth_embeddings"]).abs().max() > 0.1
        torch.testing.assert_close(traced["output.depth_embeddings"], golden["output.depth_embeddings"])  # on-grid
    finally:
        model.depth_encoder.position_interpolation = "dinov2"


@needs_release
def test_report_names_the_fate_of_every_key(tmp_path, golden):
    report = convert_official_checkpoint(RELEASED, tmp_path / "model", BACKBONE)
    released, backbone = report.keys[str(RELEASED)], report.keys[str(BACKBONE)]
    assert set(released) == set(read_checkpoint(RELEASED).state_dict) and len(released) == 194
    assert set(backbone) == set(read_checkpoint(BACKBONE).state_dict) and len(backbone) == 221
    for fate in [*released.values(), *backbone.values()]:
        assert fate.startswith("mapped -> ") or (fate.startswith("dropped: ") and len(fate) > 20)
    assert "noisy-gating" in released["backbone.depthmoe.mean"]
    assert backbone["rope_embed.periods"] == "mapped -> visual_encoder.rope_periods"
    assert "Wrote" in report.summary()


@needs_release
def test_mmengine_checkpoint_is_read_without_mmengine():
    assert importlib.util.find_spec("mmengine") is None
    checkpoint = read_checkpoint(RELEASED)
    assert len(checkpoint.state_dict) == 194 and "model = dict(" in checkpoint.meta["cfg"]
    assert len(checkpoint.meta["dataset_meta"]["classes"]) == 24
    with pytest.raises(pickle.UnpicklingError):  # the file is what the issue describes: weights_only refuses it
        torch.load(RELEASED, weights_only=True)


class _Payload:
    """A pickle that calls `function(*args)` when unpickled."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize(
    "make_payload, global_name",
    [
        (lambda marker: _Payload(os.system, f"touch {marker}"), "system"),
        (lambda marker: _Payload(eval, f"open({str(marker)!r}, 'w')"), "builtins.eval"),
        (lambda marker: _Payload(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
        (lambda marker: _Payload(getattr, collections.OrderedDict(), "clear"), "builtins.getattr on a collections"),
    ],
    ids=["os.system", "builtins.eval", "subprocess.Popen", "getattr-on-a-real-object"],
)
def test_pickles_that_run_code_are_refused_naming_the_global(tmp_path, make_payload, global_name):
    marker = tmp_path / "code_ran"
    checkpoint = tmp_path / "released.pth"
    torch.save({"state_dict": {}, "meta": {"cfg": "", "hook": make_payload(marker)}}, checkpoint)
    with pytest.raises(SystemExit, match=f"Refusing to read .*{global_name}"):
        main(["--checkpoint", str(checkpoint), "--output-dir", str(tmp_path / "model")])
    assert not marker.exists()


def _resaved_release(path: Path, edit) -> Path:
    checkpoint = read_checkpoint(RELEASED)
    edit(checkpoint.state_dict)
    torch.save({"meta": checkpoint.meta, "state_dict": checkpoint.state_dict}, path)
    return path


@needs_release
@pytest.mark.parametrize(
    "edit, key",
    [("drop", "backbone.depthmoe.experts_b.1.2"), ("drop", "decode_head.cls_embed.bias"),
     ("add", "backbone.depthmoe.prompt_tokens"), ("add", "auxiliary_head.conv_seg.weight")],
)
def test_released_checkpoint_with_missing_or_unknown_key_fails_naming_it(tmp_path, edit, key):
    change = (lambda sd: sd.pop(key)) if edit == "drop" else (lambda sd: sd.__setitem__(key, torch.zeros(1)))
    checkpoint = _resaved_release(tmp_path / "released.pth", change)
    name = key.removeprefix("backbone.depthmoe.")  # the adapter's converter names keys inside its prefix
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        convert_official_checkpoint(checkpoint, tmp_path / "model", BACKBONE)


@needs_release
@pytest.mark.parametrize(
    "edit, key",
    [("drop", "blocks.1.ls2.gamma"), ("drop", "depth_anything.pretrained.blocks.0.attn.qkv.weight"),
     ("add", "blocks.9.norm1.weight"), ("add", "depth_anything.pretrained.register_tokens")],
)
def test_backbone_with_missing_or_unknown_key_fails_naming_it(tmp_path, edit, key):
    layout = read_checkpoint(BACKBONE).state_dict
    layout.pop(key) if edit == "drop" else layout.__setitem__(key, torch.zeros(1))
    torch.save(layout, tmp_path / "backbone.pth")
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        convert_official_checkpoint(RELEASED, tmp_path / "model", tmp_path / "backbone.pth")


@needs_release
@pytest.mark.parametrize("layout", ["rgb_kernel", "register_tokens"])
def test_backbone_layout_variants_convert_to_the_same_weights(tmp_path, layout):
    """The authors' "RGB" rule leaves DINOv3's kernel 3-band (widened cyclically here, as their "MSI" rule does in
    the file); some DINOv3 ports spell the storage tokens `register_tokens`."""
    original = read_checkpoint(BACKBONE).state_dict
    variant = dict(original)
    if layout == "rgb_kernel":
        variant["patch_embed.proj.weight"] = original["patch_embed.proj.weight"][:, :3]
    else:
        variant["register_tokens"] = variant.pop("storage_tokens")
    torch.save(variant, tmp_path / "backbone.pth")
    report = convert_official_checkpoint(RELEASED, tmp_path / "variant", tmp_path / "backbone.pth")
    convert_official_checkpoint(RELEASED, tmp_path / "original", BACKBONE)
    fates = report.keys[str(tmp_path / "backbone.pth")]
    assert "widened to 4 bands" in fates["patch_embed.proj.weight"] if layout == "rgb_kernel" else (
        fates["register_tokens"] == "mapped -> visual_encoder.model.embeddings.register_tokens")
    variant_weights = load_file(tmp_path / "variant" / "model.safetensors")
    for key, value in load_file(tmp_path / "original" / "model.safetensors").items():
        assert torch.equal(variant_weights[key], value), key


@needs_release
def test_release_without_backbone_needs_named_encoders(tmp_path):
    with pytest.raises(ValueError, match="--backbone"):
        convert_official_checkpoint(RELEASED, tmp_path / "model")


@needs_release
def test_vit_l_release_names_the_hub_encoders():
    """At the published size the encoders are Hub checkpoints, so a folder without `--backbone` can load them."""
    checkpoint = read_checkpoint(RELEASED)
    text = checkpoint.meta["cfg"]
    for small, large in (("depth=4,", "depth=24,"), ("embed_dim=64,", "embed_dim=1024,"), ("num_heads=4,",
                         "num_heads=16,"), ("ffn_ratio=2.0,", "ffn_ratio=4.0,"), ("num_layers=4,", "num_layers=24,")):
        assert small in text
        text = text.replace(small, large)
    checkpoint.meta["cfg"] = text
    config, _ = release_config(checkpoint)
    assert config.backbone == "facebook/dinov3-vitl16-pretrain-lvd1689m"
    assert config.depth_backbone == "depth-anything/prompt-depth-anything-vitl-hf"
