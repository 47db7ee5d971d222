"""spectralmoe-compare: every method through the training command on the same data; resume skips finished ones."""

import csv
import math
import shutil

import pytest
import torch
from transformers import DINOv3ViTModel

from modeling_spectralmoe.trainer.compare import compare
from modeling_spectralmoe.trainer.run_config import load_run_config
from modeling_spectralmoe.trainer.trainer import Trainer

from .training_fixtures import write_tiny_preset

METHODS = ["spectralmoe", "set", "lora"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_dataset, tiny_encoders):
    root = tmp_path_factory.mktemp("compare")
    preset = write_tiny_preset(root / "run.yaml", tiny_dataset, root / "unused", tiny_encoders, max_steps=2)
    return preset, compare(preset, METHODS, root / "full"), root / "full"


def test_comparison_writes_table_csv_and_chart(uninterrupted):
    _, entries, output = uninterrupted
    assert [entry["method"] for entry in entries] == METHODS
    rows = list(csv.reader(open(output / "comparison.csv")))
    assert rows[0][:3] == ["backbone", "method", "adapter params (M)"] and len(rows) == 1 + len(METHODS)
    assert {"target_bright mIoU", "target_dim mAcc", "mean_over_target_domains mIoU"} <= set(rows[0])
    table = (output / "comparison.md").read_text()
    assert all(f"| {method} |" in table for method in METHODS)
    assert "- set mixes the images of a batch: evaluated 1 image(s) at a time" in table  # its batch is recorded
    assert (output / "comparison.png").stat().st_size > 0
    # Trained through the training command: a final model folder per method, and each method trains its own set.
    counts = {entry["method"]: entry["adapter_parameters"] for entry in entries}
    assert len(set(counts.values())) == len(METHODS) and all(entry["step_seconds"] > 0 for entry in entries)
    assert all((output / "default" / method / "final_model" / "model.safetensors").is_file() for method in METHODS)


def test_interrupted_comparison_resumes_and_gives_the_same_table(uninterrupted, tmp_path, capsys):
    preset, _, full = uninterrupted
    # Killed after the first method: its finished folder is there, the others are not.
    shutil.copytree(full / "default" / METHODS[0], tmp_path / "default" / METHODS[0])
    entries = compare(preset, METHODS, tmp_path)
    assert f"compare: {METHODS[0]} on the preset backbone is done, skipping it" in capsys.readouterr().out
    resumed = list(csv.reader(open(tmp_path / "comparison.csv")))
    expected = list(csv.reader(open(full / "comparison.csv")))
    measured = {resumed[0].index("step time (s)"), resumed[0].index("saved for backward (MB)")}
    strip = lambda rows: [[v for i, v in enumerate(row) if i not in measured] for row in rows]  # noqa: E731
    assert strip(resumed) == strip(expected)
    assert len(entries) == len(METHODS)


@pytest.mark.parametrize("method", ["rein", "depthforge", "frozen", "fada", "dora", "adaptformer", "vpt"])
def test_every_other_method_trains_through_the_training_command(uninterrupted, tmp_path, tiny_encoders, method):
    """The three methods above train in the comparison; the others train here: two steps, evaluated, saved, the frozen
    encoders bit-identical to their source files afterwards."""
    preset = uninterrupted[0]
    trainer = Trainer(load_run_config(preset, ["--model.adapter_type", method, "--output_dir", str(tmp_path)]))
    results = trainer.train()
    assert all(math.isfinite(metrics["mean_iou"]) for metrics in results.values())
    assert (tmp_path / "final_model" / "model.safetensors").is_file()
    model = trainer.accelerator.unwrap_model(trainer.model)
    state = model.visual_encoder.model.state_dict()
    encoder = {key.replace(".base_layer.", "."): tensor for key, tensor in state.items()}
    source = DINOv3ViTModel.from_pretrained(tiny_encoders[0]).state_dict()
    widened = {"embeddings.patch_embeddings.weight"}  # the RGB kernel, widened to the tiny dataset's 4 bands
    assert all(torch.equal(encoder[key], value) for key, value in source.items() if key not in widened)
