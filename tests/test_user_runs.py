"""Training and inference on users' data (rows of ../shared/specs/BAD_INPUTS.md and its "smaller things"): 16-bit
R, G, B augmentation, tiny and source-only datasets, no-data at inference, finished and concurrent runs, full disks,
moved encoders, strict JSON, step-numbered checkpoints, the README's snippet, and per-split band sets with DOFA."""

import fcntl
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import yaml

from modeling_spectralmoe import SpectralMoEForSemanticSegmentation, SpectralMoEImageProcessor
from modeling_spectralmoe.data.loading import evaluation_loader, split_bands
from modeling_spectralmoe.data.schema import SpectralMetadata, segmentation_features
from modeling_spectralmoe.evaluation.protocol import EvaluationConfig, predict_logits, results_json
from modeling_spectralmoe.modeling_spectralmoe import _check_local_checkpoint
from modeling_spectralmoe.trainer.plots import display_rgb
from modeling_spectralmoe.trainer.run_config import load_run_config
from modeling_spectralmoe.trainer.trainer import Trainer

from . import conftest
from .test_adapter_protocol import readme_block
from .conftest import TINY_LABELS, save_tiny_dofa, tiny_config
from .training_fixtures import REPO, write_tiny_preset


def blocky_scene(rng, bands: int, size: int, low: int, high: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Values constant over 8 x 8 blocks (resizing keeps their distribution) and a 3-class label."""
    coarse = rng.integers(low, high, (bands, size // 8, size // 8))
    image = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2).astype(dtype)
    label = (np.repeat(np.repeat(rng.integers(0, 3, (size // 8, size // 8)), 8, 0), 8, 1)).astype(np.uint8)
    return image, label


def write_dataset(directory, splits: dict, metadata: SpectralMetadata) -> str:
    """`splits`: name -> (domain, list of (image, label)); each split keeps its own band count."""
    parts = {}
    for split, (domain, examples) in splits.items():
        channels, height, width = examples[0][0].shape
        parts[split] = datasets.Dataset.from_dict(
            {"pixel_values": [image for image, _ in examples], "label": [label for _, label in examples],
             "domain": [domain] * len(examples), "image_id": [f"{split}_{i}" for i in range(len(examples))]},
            features=segmentation_features(channels, height, width, examples[0][0].dtype.name),
        )
    datasets.DatasetDict(parts).save_to_disk(str(directory))
    metadata.save(directory)
    return str(directory)


def source_metadata(name, images, band_names, **fields) -> SpectralMetadata:
    pixels = np.stack(images).astype(np.float64)
    return SpectralMetadata(name=name, band_names=band_names, mean=pixels.mean((0, 2, 3)).tolist(),
                            std=pixels.std((0, 2, 3)).tolist(), id2label=TINY_LABELS, **fields)


def band_moments(batches) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std of normalised pixels over the measured pixels of all batches."""
    values = torch.cat([batch["pixel_values"].permute(1, 0, 2, 3)[:, batch["pixel_mask"].bool()] for batch in batches],
                       dim=1).double()
    return values.mean(1).numpy(), values.std(1).numpy()


@pytest.fixture(scope="module")
def uint16_rgb(tmp_path_factory):
    rng = np.random.default_rng(2)
    examples = [blocky_scene(rng, 3, 64, 200, 3800, np.uint16) for _ in range(8)]
    root = tmp_path_factory.mktemp("uint16")
    metadata = source_metadata("rgb16", [image for image, _ in examples], ["R", "G", "B"])
    return write_dataset(root / "data", {"train": ("a", examples)}, metadata)


def test_bad_input_02_uint16_rgb_training_batches_match_evaluation_batches(uint16_rgb, tiny_encoders, tmp_path):
    preset = write_tiny_preset(tmp_path / "run.yaml", uint16_rgb, tmp_path / "out", tiny_encoders,
                               augmentation={"crop_size": 32, "scale_range": [0.75, 1.5]})
    trainer = Trainer(load_run_config(preset))
    loader = trainer._train_loader()
    assert trainer.train_split.augmentation.photometric and trainer.train_split.augmentation.value_range > 3800
    training = []
    for epoch in range(6):
        trainer.train_split.set_epoch(epoch)
        training += list(loader)
    evaluation = list(evaluation_loader(trainer.dataset["train"], trainer.processor, batch_size=4))
    (train_mean, train_std), (eval_mean, eval_std) = band_moments(training), band_moments(evaluation)
    np.testing.assert_allclose(train_mean, eval_mean, atol=0.2)
    np.testing.assert_allclose(train_std, eval_std, atol=0.2)

    clipping = load_run_config(preset, ["--augmentation.value_range", "255"])
    with pytest.raises(ValueError, match="value_range` is 255.*uint16 data.*would clip"):
        Trainer(clipping)._train_loader()


@pytest.fixture(scope="module")
def source_only_run(tmp_path_factory, tiny_encoders):
    """3 source tiles, no target split, batch 8, 2 steps."""
    rng = np.random.default_rng(5)
    examples = [blocky_scene(rng, 4, 64, 0, 255, np.uint8) for _ in range(3)]
    root = tmp_path_factory.mktemp("source_only")
    metadata = source_metadata("my-sensor-survey", [image for image, _ in examples], ["NIR", "R", "G", "B"],
                               wavelengths=[0.83, 0.665, 0.56, 0.49])
    dataset = write_dataset(root / "folder_name", {"train": ("a", examples)}, metadata)
    preset = write_tiny_preset(root / "run.yaml", dataset, root / "out", tiny_encoders, max_steps=2,
                               per_device_batch_size=8, checkpointing_steps=100)
    trainer = Trainer(load_run_config(preset))
    results = trainer.train()
    return {"trainer": trainer, "results": results, "output_dir": root / "out"}


def test_bad_input_05_a_source_split_smaller_than_the_batch_trains_its_steps_and_ends(source_only_run):
    trainer = source_only_run["trainer"]
    assert trainer.progress.global_step == 2 and trainer.progress.epoch == 2  # one batch of 3 per epoch
    assert sorted(p.name for p in (source_only_run["output_dir"] / "checkpoints").iterdir()) == ["checkpoint_1",
                                                                                               "checkpoint_2"]


def test_bad_input_06_a_source_only_dataset_trains_and_writes_everything(source_only_run, capsys):
    final = source_only_run["output_dir"] / "final_model"
    assert {"README.md", "all_results.json", "config.json", "model.safetensors", "predictions.png"} <= {
        p.name for p in final.iterdir()}
    assert json.loads((source_only_run["output_dir"] / "all_results.json").read_text()) == {}
    assert "No target domains" in capsys.readouterr().out or source_only_run["results"] == {}


def test_small_model_card_names_the_dataset_by_its_metadata_name(source_only_run):
    card = (source_only_run["output_dir"] / "final_model" / "README.md").read_text()
    assert "my-sensor-survey" in card and "folder_name" not in card


def test_bad_input_09_nodata_stays_nodata_in_label_maps_and_figures():
    processor = SpectralMoEImageProcessor(image_mean=[10.0] * 3, image_std=[2.0] * 3, nodata_value=0,
                                          size_divisor=16)
    image = np.full((3, 20, 24), 12.0, np.float32)
    image[:, :5, :6] = 0  # no-data corner
    inputs = processor(image, input_data_format="channels_first")

    class Output:
        logits = torch.zeros(1, 3, 32, 32).index_fill(1, torch.tensor([1]), 1.0)  # class 1 everywhere

    maps = processor.post_process_semantic_segmentation(Output, target_sizes=[(20, 24)],
                                                        pixel_mask=inputs["pixel_mask"])
    assert (maps[0][:5, :6] == 255).all() and (maps[0][5:] == 1).all()
    image[0, 10:] = 1000  # a bright valid half: the stretch follows the valid pixels, no-data is black
    rgb = display_rgb(image, [0, 1, 2], valid=inputs["pixel_mask"][0, :20, :24].numpy().astype(bool))
    assert (rgb[:5, :6] == 0).all() and rgb[10:, 6:, 0].min() == 1.0 and rgb[5:10, 6:, 0].max() == 0.0


def test_bad_input_10_resuming_a_finished_run_keeps_its_results(reference_run, tiny_dataset, tiny_encoders, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(reference_run["output_dir"], output)
    before = {path.name: path.read_bytes() for path in [output / "all_results.json", output / "final_model" /
                                                         "README.md"]}
    preset = write_tiny_preset(tmp_path / "run.yaml", tiny_dataset, output, tiny_encoders)
    results = Trainer(load_run_config(preset, ["--resume_from_checkpoint", "latest"])).train()
    assert results == json.loads(before["all_results.json"])
    assert {path.name: path.read_bytes() for path in [output / "all_results.json", output / "final_model" /
                                                      "README.md"]} == before


def test_bad_input_15_train_errors_are_the_last_line_under_accelerate_launch(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "-q", "--num_processes", "1", "-m",
         "modeling_spectralmoe.trainer.train", "--config", "demo", "--dataset", str(tmp_path / "missing")],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.returncode != 0
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(tmp_path / "missing") in last and "Traceback" not in completed.stderr


def test_bad_input_16_moved_encoder_folders_name_the_setting_and_the_fix(tmp_path, tiny_encoders):
    encoders = tmp_path / "encoders"
    shutil.copytree(tiny_encoders[0], encoders / "visual")
    shutil.copytree(tiny_encoders[1], encoders / "depth")
    model = SpectralMoEForSemanticSegmentation(tiny_config(str(encoders / "visual"), str(encoders / "depth")))
    model.save_pretrained(tmp_path / "model")
    encoders.rename(tmp_path / "moved")
    with pytest.raises(FileNotFoundError, match=r"`config.backbone` names the local encoder folder .*save_encoders"):
        SpectralMoEForSemanticSegmentation.from_pretrained(tmp_path / "model")
    reloaded = SpectralMoEForSemanticSegmentation.from_pretrained(
        tmp_path / "model", backbone=str(tmp_path / "moved" / "visual"),
        depth_backbone=str(tmp_path / "moved" / "depth"))
    assert reloaded.config.backbone.endswith("visual")
    assert load_run_config(None, ["--save_encoders", "true"]).save_encoders


def test_bad_input_17_a_full_disk_names_the_path_and_leaves_no_partial_checkpoint(tiny_dataset, tiny_encoders,
                                                                                   tmp_path):
    trainer = Trainer(load_run_config(write_tiny_preset(tmp_path / "run.yaml", tiny_dataset, tmp_path / "out",
                                                        tiny_encoders)))

    def full_disk(folder):  # torch's zip writer fails part-way through a file
        os.makedirs(folder)
        (Path(folder) / "model.safetensors").write_bytes(b"half a tensor")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4160 vs 4058")

    trainer.accelerator.save_state = full_disk
    trainer.progress.global_step = 3
    with pytest.raises(OSError, match=r"No space left on device while saving the checkpoint .*checkpoint_3"):
        trainer._save_checkpoint()
    assert list((tmp_path / "out" / "checkpoints").iterdir()) == []


def test_bad_input_18_two_runs_on_one_output_dir_are_refused(tiny_dataset, tiny_encoders, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    with open(output / ".run.lock", "a+") as other_run:
        fcntl.flock(other_run, fcntl.LOCK_EX | fcntl.LOCK_NB)
        other_run.write("process 12345 on elsewhere")
        other_run.flush()
        trainer = Trainer(load_run_config(write_tiny_preset(tmp_path / "run.yaml", tiny_dataset, output,
                                                            tiny_encoders)))
        with pytest.raises(FileExistsError, match=r"in use by another training run \(process 12345 on elsewhere\)"):
            trainer.train()
    assert not (output / "checkpoints").exists()


def test_bad_input_19_an_oracle_split_that_does_not_exist_is_refused(tiny_dataset):
    run = load_run_config(None, ["--dataset", tiny_dataset, "--model_selection", "oracle:target_brigth"])
    metadata = SpectralMetadata.load(tiny_dataset)
    with pytest.raises(ValueError, match="names split 'target_brigth', which is not evaluated; did you mean "
                                         "'target_bright'"):
        run.check_dataset(metadata, ["train", "validation", "target_bright", "target_dim"])


def test_small_all_results_json_has_no_nan_literals(reference_run):
    text = results_json({"target": {"per_category_iou": {"car": math.nan}, "mean_iou": 50.0}})
    assert json.loads(text) == {"target": {"per_category_iou": {"car": None}, "mean_iou": 50.0}}

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    for path in (reference_run["output_dir"] / "all_results.json",
                 reference_run["output_dir"] / "final_model" / "all_results.json"):
        json.loads(path.read_text(), parse_constant=refuse)


def test_small_checkpoints_are_numbered_by_step(reference_run):
    """6 steps, 4 batches per epoch, a checkpoint every 3 steps and at every epoch end."""
    names = {path.name for path in (reference_run["output_dir"] / "checkpoints").iterdir()}
    assert names == {"checkpoint_3", "checkpoint_4", "checkpoint_6"}


def test_small_readme_use_a_trained_model_snippet_runs(reference_run):
    snippet = readme_block("## Use a trained model")
    folder = str(reference_run["output_dir"] / "final_model")
    assert '"demo/output/final_model"' in snippet
    completed = subprocess.run([sys.executable, "-c", snippet.replace('"demo/output/final_model"', repr(folder))
                                + "\nprint(tuple(label_map.shape))"], cwd=REPO, capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip().endswith(")")


def test_small_a_missing_shared_folder_is_said_once_in_the_test_summary(monkeypatch, tmp_path):
    lines = []

    class Reporter:
        def write_line(self, line):
            lines.append(line)

    monkeypatch.setattr(conftest, "SHARED", tmp_path / "absent")
    conftest.pytest_terminal_summary(Reporter())
    assert len(lines) == 1 and "golden and real-data tests were skipped" in lines[0]
    monkeypatch.setattr(conftest, "SHARED", tmp_path)
    conftest.pytest_terminal_summary(Reporter())
    assert len(lines) == 1


def test_processor_takes_statistics_per_band_by_wavelength_then_name():
    processor = SpectralMoEImageProcessor(image_mean=[100.0, 200.0, 300.0], image_std=[1.0, 2.0, 3.0],
                                          band_names=["NIR", "R", "G"], wavelengths=[0.84, 0.665, 0.56])
    mean, std, sources = processor.band_statistics(["a", "b"], [0.57, 0.85])
    assert (mean, std) == ([300.0, 100.0], [3.0, 1.0]) and sources[0].startswith("G (nearest wavelength")
    assert processor.band_statistics(["r", "nir"])[:2] == ([200.0, 100.0], [2.0, 1.0])
    with pytest.raises(ValueError, match="No statistics for band 0 \\(SWIR"):
        processor.band_statistics(["SWIR"])
    inputs = processor(np.full((2, 16, 16), 301.0), band_names=["a", "b"], wavelengths=[0.57, 0.85],
                       input_data_format="channels_first")
    assert inputs["wavelengths"] == [0.57, 0.85] and torch.allclose(inputs["pixel_values"][0, 0], torch.tensor(1 / 3))


SOURCE_WAVELENGTHS = np.linspace(0.40, 0.95, 48).round(4).tolist()
SENTINEL2 = [0.443, 0.49, 0.56, 0.665, 0.705, 0.74, 0.783, 0.842, 0.865, 0.945, 1.61, 2.19]


def test_per_split_band_sets_48_band_source_12_band_target_with_dofa(tmp_path, tiny_encoders):
    rng = np.random.default_rng(48)
    source = [blocky_scene(rng, 48, 64, 0, 4000, np.uint16) for _ in range(4)]
    target = [blocky_scene(rng, 12, 64, 0, 4000, np.uint16) for _ in range(2)]
    names = [f"S2_B{index}" for index in range(12)]
    metadata = source_metadata("hyper-to-s2", [image for image, _ in source], [f"h{i}" for i in range(48)],
                               wavelengths=SOURCE_WAVELENGTHS, target_splits=["target_s2"],
                               domain_bands={"s2": {"band_names": names, "wavelengths": SENTINEL2}})
    dataset = write_dataset(tmp_path / "data", {"train": ("hyper", source), "target_s2": ("s2", target)}, metadata)
    dofa = save_tiny_dofa(tmp_path / "dofa")
    preset = write_tiny_preset(tmp_path / "run.yaml", dataset, tmp_path / "out", (dofa, tiny_encoders[1]),
                               max_steps=2, checkpointing_steps=100, router_diagnostics_steps=0)
    trainer = Trainer(load_run_config(preset))
    results = trainer.train()
    assert "mean_iou" in results["target_s2"]
    recorded = results["target_s2"]["normalization"]["bands"]
    assert recorded["S2_B1"]["statistics_of"].startswith("h8 (nearest wavelength 0.4936")  # 0.40 + 8 x 0.55 / 47

    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    bands = split_bands(trainer.dataset["target_s2"], trainer.metadata, model.config)
    assert bands == {"band_names": names, "wavelengths": SENTINEL2}
    batch = next(iter(evaluation_loader(trainer.dataset["target_s2"], trainer.processor, 1, bands=bands)))
    evaluated = predict_logits(model, batch["pixel_values"], EvaluationConfig(), band_names=batch["band_names"],
                               wavelengths=batch["wavelengths"])
    by_hand = trainer.processor(target[0][0], band_names=names, wavelengths=SENTINEL2,
                                input_data_format="channels_first")
    with torch.no_grad():
        logits = model(by_hand["pixel_values"], wavelengths=SENTINEL2).logits
        permuted = model(by_hand["pixel_values"], wavelengths=SENTINEL2[::-1]).logits
    torch.testing.assert_close(evaluated, logits)
    assert (permuted - logits).abs().max() > 1e-4
    saved = yaml.safe_load((tmp_path / "out" / "final_model" / "README.md").read_text().split("---\n")[1])
    assert {entry["dataset"]["split"] for entry in saved["model-index"][0]["results"]} == {"target_s2"}


@pytest.mark.parametrize("value, local", [
    ("earthflow/DOFA/DOFA_ViT_large_e100.pth", False),  # a file of a Hub repo: left to the Hub
    ("Yuxin-CV/EVA-02/eva02/pt/eva02_L_pt_m38m_p14to16.pt", False),
    ("facebook/dinov2-large", False),
    ("outputs/encoders/visual", True),
    ("./visual", True),
])
def test_bad_input_16_only_missing_local_encoder_paths_are_refused_as_moved(value, local):
    if local:
        with pytest.raises(FileNotFoundError, match="names the local encoder folder"):
            _check_local_checkpoint("backbone", value)
    else:
        _check_local_checkpoint("backbone", value)
