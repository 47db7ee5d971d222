"""Training runs of the tiny model: the saved folder (figures, model card, loading in a fresh process), checkpoints
that hold only the trained weights, refusing to overwrite another run, exact kill-and-resume, the schedule of a
2-process run and the Hub upload."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from modeling_spectralmoe.stac_mlm import STAC_MLM_FILE
from modeling_spectralmoe.trainer.plots import DOMAIN_CHART, PREDICTIONS, display_rgb
from modeling_spectralmoe.trainer.run_config import load_run_config
from modeling_spectralmoe.trainer.trainer import Trainer

from .training_fixtures import HUB_REPO, assert_same_results, run_module, trainable_weights, write_tiny_preset


class Interrupted(Exception):
    """Stands for the process being killed right after a checkpoint was written."""


def test_final_folder_shows_its_results_as_figures(reference_run):
    folder = reference_run["output_dir"] / "final_model"
    card = (folder / "README.md").read_text()
    for figure in (DOMAIN_CHART, PREDICTIONS):
        assert (folder / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({figure})" in card


def test_display_rgb_stretches_the_named_bands():
    bands = np.stack([np.full((4, 5), 7.0), np.arange(20.0).reshape(4, 5), np.zeros((4, 5))])
    image = display_rgb(bands, [1, 2, 0])
    assert image.shape == (4, 5, 3) and image.min() >= 0 and image.max() <= 1
    assert image[..., 0].max() == 1 and image[..., 0].min() == 0  # the ramp band spans the full range


def test_final_folder_loads_in_a_fresh_process_as_the_readme_says(reference_run):
    """A new interpreter knows nothing of the package: model, processor and pipeline come from the folder alone."""
    folder = reference_run["output_dir"] / "final_model"
    script = f"""
import numpy as np
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation
model = AutoModelForSemanticSegmentation.from_pretrained({str(folder)!r}, trust_remote_code=True)
processor = AutoImageProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
bands = np.random.default_rng(0).integers(0, 255, (4, 75, 100)).astype(np.uint8)
inputs = processor(bands, input_data_format="channels_first", return_tensors="pt")
label_map = processor.post_process_semantic_segmentation(model(**inputs), target_sizes=[bands.shape[-2:]])[0]
assert "modeling_spectralmoe" not in type(processor).__module__.split(".")[0], type(processor).__module__
print(tuple(label_map.shape))
"""
    completed = subprocess.run([sys.executable, "-c", script], cwd=folder, capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip().endswith("(75, 100)")


def test_a_new_run_does_not_silently_replace_an_earlier_runs_checkpoints(reference_run, tiny_dataset, tiny_encoders):
    preset = write_tiny_preset(reference_run["output_dir"].parent / "again.yaml", tiny_dataset,
                               reference_run["output_dir"], tiny_encoders)
    with pytest.raises(FileExistsError, match="--resume_from_checkpoint latest"):
        Trainer(load_run_config(preset)).train()
    assert any((reference_run["output_dir"] / "checkpoints").glob("checkpoint_*"))


def test_checkpoints_hold_only_the_trained_weights(reference_run):
    checkpoints = sorted((reference_run["output_dir"] / "checkpoints").glob("checkpoint_*"))
    assert checkpoints
    names = load_file(checkpoints[-1] / "model.safetensors").keys()
    assert names and all(name.startswith(("adapter.", "decode_head.")) for name in names)


def test_resume_skips_a_checkpoint_cut_short(reference_run, tiny_dataset, tiny_encoders, tmp_path):
    """A kill during a save leaves a broken newest checkpoint: resuming falls back to the one before it."""
    output = tmp_path / "out"
    shutil.copytree(reference_run["output_dir"] / "checkpoints", output / "checkpoints")
    newest, *older = sorted((output / "checkpoints").glob("checkpoint_*"), key=lambda p: -int(p.name.split("_")[1]))
    assert older, "the reference run keeps several checkpoints"
    (newest / "optimizer.bin").unlink()
    preset = write_tiny_preset(tmp_path / "run.yaml", tiny_dataset, output, tiny_encoders)
    trainer = Trainer(load_run_config(preset, ["--resume_from_checkpoint", "latest"]))
    trainer.train()
    assert trainer.progress.global_step == 6


def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path, tiny_dataset, tiny_encoders, reference_run):
    preset = write_tiny_preset(tmp_path / "run.yaml", tiny_dataset, tmp_path / "out", tiny_encoders)
    trainer = Trainer(load_run_config(preset))
    initial = {name: p.detach().clone() for name, p in trainer.model.named_parameters() if p.requires_grad}
    save_checkpoint = trainer._save_checkpoint

    def save_checkpoint_then_die():
        save_checkpoint()
        if trainer.progress.global_step == 3:
            raise Interrupted

    trainer._save_checkpoint = save_checkpoint_then_die
    with pytest.raises(Interrupted):
        trainer.train()  # 6-step schedule, killed after the step-3 checkpoint (mid-epoch: 3 of 4 batches)
    assert not (tmp_path / "out" / "final_model").exists()

    resumed = run_module("modeling_spectralmoe.trainer.train", "--config", preset, "--resume_from_checkpoint",
                         "latest", "--max_steps", "6", "--checkpointing_steps", "3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed at step 3, epoch 0" in resumed.stdout

    reference = trainable_weights(reference_run["output_dir"] / "final_model")
    final = trainable_weights(tmp_path / "out" / "final_model")
    assert set(final) == set(reference) == set(initial)
    for name in reference:
        torch.testing.assert_close(final[name], reference[name], rtol=0, atol=1e-6, msg=name)
    changed = {name for name in reference if not torch.equal(reference[name], initial[name])}
    assert changed == set(initial), f"never updated: {sorted(set(initial) - changed)}"
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert_same_results(results, json.loads((reference_run["output_dir"] / "all_results.json").read_text()))


def test_two_process_training_ends_its_schedule_on_its_last_step(tiny_dataset, tiny_encoders, tmp_path):
    """8 scenes, batch 2 per process, 2 processes: 2 optimizer steps per epoch, so 2 epochs are 4 steps, and the poly
    learning rate must reach 0 exactly there (not after 2x the steps, nor halfway)."""
    preset = write_tiny_preset(tmp_path / "run.yaml", tiny_dataset, tmp_path / "out", tiny_encoders, max_steps=None,
                               epochs=2, checkpointing_steps=100, router_diagnostics_steps=0)
    completed = run_module("modeling_spectralmoe.trainer.train", "--config", preset, processes=2, threads=1)
    assert completed.returncode == 0, completed.stderr[-3000:]
    last = sorted((tmp_path / "out" / "checkpoints").glob("checkpoint_*"), key=lambda p: int(p.name.split("_")[1]))[-1]
    progress = torch.load(last / "custom_checkpoint_0.pkl", weights_only=True)
    scheduler = torch.load(last / "scheduler.bin", weights_only=True)
    assert (progress["global_step"], progress["epoch"]) == (4, 2)
    assert scheduler["last_epoch"] == 4 and scheduler["_last_lr"] == [0.0, 0.0]


def test_push_to_hub_uploads_the_folder_with_a_model_card(reference_run):
    calls = reference_run["hub_calls"]
    assert [call[0] for call in calls if call[0] != "HfApi"] == ["create_repo", "upload_folder"]
    create = next(call for call in calls if call[0] == "create_repo")
    assert create[1] == (HUB_REPO,) and create[2].get("exist_ok") is True
    upload = next(call for call in calls if call[0] == "upload_folder")[2]
    assert upload["repo_id"] == HUB_REPO
    assert Path(upload["folder_path"]) == reference_run["output_dir"] / "final_model"
    folder = reference_run["output_dir"] / "final_model"
    remote_code = {path.name for path in folder.glob("*.py")}
    assert {"modeling_spectralmoe.py", "configuration_spectralmoe.py", "image_processing_spectralmoe.py",
            "pipeline_spectralmoe.py", "stac_mlm.py"} <= remote_code
    expected = {"README.md", "config.json", "model.safetensors", "preprocessor_config.json", DOMAIN_CHART,
                PREDICTIONS, STAC_MLM_FILE, *remote_code}
    assert expected <= set(upload["files"])

    card = upload["card"]
    assert card.startswith("---\n")
    front_matter = yaml.safe_load(card.split("---\n")[1])
    assert front_matter["library_name"] == "transformers" and front_matter["pipeline_tag"] == "image-segmentation"
    assert front_matter["inference"] is False and front_matter["license"] == "apache-2.0"
    index = front_matter["model-index"][0]
    assert index["name"] == HUB_REPO
    results = reference_run["results"]
    reported = {entry["dataset"]["split"]: entry["metrics"] for entry in index["results"]}
    assert {"target_bright", "target_dim", "pooled_targets"} <= set(reported)
    assert reported["pooled_targets"][0] == {"type": "mean_iou", "name": "mIoU",
                                             "value": round(results["pooled_targets"]["mean_iou"], 2)}
    assert "## How to use" in card and "target_bright" in card.split("## Results")[1]
