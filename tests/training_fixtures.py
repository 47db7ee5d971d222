"""A tiny dataset in the package's schema, tiny run presets and one reference training run, shared (session-scoped,
through conftest) by the training, resume, saved-folder and evaluation tests. Every run uses a width-32, 4-layer
model on 32-64 px images for a few steps."""

import math
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from modeling_spectralmoe.data.schema import IGNORE_INDEX, SpectralMetadata, segmentation_features
from modeling_spectralmoe.trainer.run_config import load_run_config
from modeling_spectralmoe.trainer.trainer import Trainer

from .conftest import TINY_LABELS


REPO = Path(__file__).resolve().parents[1]
GF2_WAVELENGTHS = [0.83, 0.665, 0.56, 0.49]
TINY_BANDS = ["NIR", "R", "G", "B"]
TINY_MODEL = dict(num_experts=3, expert_rank=4, num_expert_tokens=8, num_queries=8, decoder_hidden_dim=32,
                  decoder_num_heads=4, pixel_decoder_layers=1, pixel_decoder_ffn_dim=32, decoder_layers=2,
                  decoder_ffn_dim=32, train_num_points=256)


def write_schema_dataset(directory: Path, splits: dict, band_names, id2label, wavelengths=None, dtype="uint8") -> str:
    """`splits`: name -> list of ((C, H, W) image, (H, W) uint8 label); statistics over the `train` split."""
    dataset = {}
    for split, examples in splits.items():
        channels, height, width = examples[0][0].shape
        dataset[split] = datasets.Dataset.from_dict(
            {"pixel_values": [image for image, _ in examples], "label": [label for _, label in examples],
             "domain": [split] * len(examples), "image_id": [f"{split}_{index}" for index in range(len(examples))]},
            features=segmentation_features(channels, height, width, dtype),
        )
    pixels = np.stack([image for image, _ in splits["train"]]).astype(np.float64)
    datasets.DatasetDict(dataset).save_to_disk(str(directory))
    SpectralMetadata(
        name=directory.name, band_names=band_names, mean=pixels.mean((0, 2, 3)).tolist(),
        std=pixels.std((0, 2, 3)).tolist(), id2label=id2label, wavelengths=wavelengths, source_split="train",
        target_splits=[split for split in splits if split.startswith("target")],
    ).save(str(directory))
    return str(directory)


def synthetic_scene(rng, size: int, gain: float) -> tuple[np.ndarray, np.ndarray]:
    """Blocky 3-class scene with a per-class spectrum, some ignore pixels; `gain` changes the sensor."""
    rows, columns = np.mgrid[:size, :size]
    label = ((rows // rng.integers(6, 12) + columns // rng.integers(6, 12) + rng.integers(3)) % 3).astype(np.uint8)
    spectra = np.array([[30, 40, 60, 80], [200, 40, 90, 40], [120, 110, 105, 100]], dtype=np.float64)
    image = spectra[label].transpose(2, 0, 1) * gain + rng.normal(0, 12, (4, size, size))
    label[rng.random((size, size)) < 0.05] = IGNORE_INDEX
    return np.clip(image, 0, 255).astype(np.uint8), label


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> str:
    """8 training scenes (4 steps per epoch at batch 2), a source validation split and two target domains with odd
    image counts (uneven shards across 2 processes)."""
    rng = np.random.default_rng(0)
    splits = {"train": 8, "validation": 2, "target_bright": 3, "target_dim": 1}
    gains = {"train": 1.0, "validation": 1.0, "target_bright": 1.2, "target_dim": 0.7}
    examples = {split: [synthetic_scene(rng, 64, gains[split]) for _ in range(count)]
                for split, count in splits.items()}
    return write_schema_dataset(tmp_path_factory.mktemp("data") / "tiny", examples, TINY_BANDS, TINY_LABELS,
                                GF2_WAVELENGTHS)


def write_tiny_preset(path: Path, dataset: str, output_dir: Path, encoders, **overrides) -> str:
    """A complete run preset for the tiny model: 6 steps of batch 2 on 32 px crops, checkpoints every 3 steps."""
    values = {
        "dataset": dataset, "output_dir": str(output_dir), "seed": 42, "max_steps": 6, "per_device_batch_size": 2,
        "learning_rate": 1e-3, "model": {"backbone": encoders[0], "depth_backbone": encoders[1], **TINY_MODEL},
        "augmentation": {"crop_size": 32, "scale_range": [0.75, 1.5]},
        "evaluation": {"mode": "whole", "batch_size": 1}, "eval_every_epochs": 100, "checkpointing_steps": 3,
        "checkpoints_total_limit": 4, "router_diagnostics_steps": 2, "report_to": "none", "num_workers": 0,
        **overrides,
    }
    path.write_text(yaml.safe_dump(values))
    return str(path)


HUB_REPO = "test-user/spectralmoe-tiny"


def hub_recorder(calls: list):
    """Stands in for `huggingface_hub.HfApi`: records calls (and the uploaded folder's files), never touches the
    network; any other method is missing, so an unexpected call fails."""

    class RecordingHfApi:
        def __init__(self, *args, **kwargs):
            calls.append(("HfApi", args, kwargs))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", (repo_id,), kwargs))

        def upload_folder(self, *, folder_path, repo_id, **kwargs):
            folder = Path(folder_path)
            files = sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
            card = (folder / "README.md").read_text() if (folder / "README.md").is_file() else None
            calls.append(("upload_folder", (), dict(kwargs, folder_path=folder_path, repo_id=repo_id, files=files,
                                                    card=card)))

    return RecordingHfApi


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, tiny_dataset, tiny_encoders):
    """Six uninterrupted steps in this process, pushed to a recorded Hub."""
    root = tmp_path_factory.mktemp("reference")
    preset = write_tiny_preset(root / "run.yaml", tiny_dataset, root / "out", tiny_encoders, push_to_hub=True,
                               hub_model_id=HUB_REPO)
    calls = []
    import huggingface_hub

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub, "HfApi", hub_recorder(calls))
        results = Trainer(load_run_config(preset)).train()
    return {"output_dir": root / "out", "results": results, "hub_calls": calls}


def trainable_weights(folder: Path) -> dict[str, torch.Tensor]:
    weights = load_file(folder / "model.safetensors")
    assert weights and not any(name.startswith(("visual_encoder.", "depth_encoder.")) for name in weights)
    return weights


def assert_same_results(actual, expected, path="results"):
    """Equal nested results; NaN (a class absent from reference and prediction) equals NaN."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), path
        for key in expected:
            assert_same_results(actual[key], expected[key], f"{path}/{key}")
    else:
        assert actual == expected or (math.isnan(actual) and math.isnan(expected)), (path, actual, expected)


def run_module(module: str, *args, processes: int = 1, threads: int = 2) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` (under torchrun with `processes` > 1) from the repository root, as a user runs it."""
    command = [sys.executable, "-m", module, *map(str, args)]
    if processes > 1:
        command[1:1] = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
