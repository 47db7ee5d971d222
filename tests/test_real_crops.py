"""Real crops of ../shared/data/real/isprs (skipped when absent): Potsdam (R, G, B) -> Vaihingen (NIR, R, G) through
the folder builder and a short training run of the packaged `potsdam_vaihingen` preset."""

import math
from pathlib import Path

import numpy as np
import torch

from modeling_spectralmoe.data.loading import evaluation_loader
from modeling_spectralmoe.data.schema import IGNORE_INDEX
from modeling_spectralmoe.evaluation.protocol import EvaluationConfig, evaluate_split
from modeling_spectralmoe.trainer.run_config import load_run_config
from modeling_spectralmoe.trainer.trainer import Trainer

from .conftest import real_data_dir
from .test_data_helpers import run_builder
from .training_fixtures import TINY_MODEL


IMAGENET_MEAN = [123.675, 116.28, 103.53]
ISPRS_CLASSES = ["impervious surface", "building", "low vegetation", "tree", "car", "clutter"]


def build_isprs_with_build_folder(output: Path) -> str:
    """The real crops through the folder builder, as a user would: Potsdam (R-G-B) as the source
    domain, Vaihingen (NIR-R-G) as a target domain, both cut into 16 tiles of 128 pixels (one tile shape per
    dataset)."""
    isprs = real_data_dir("isprs")
    for city, bands in (("potsdam", ("R", "G", "B")), ("vaihingen", ("NIR", "R", "G"))):
        run_builder("folder", "--images", isprs / city / "images", "--labels", isprs / city / "labels",
                    "--band-names", *bands, "--class-names", *ISPRS_CLASSES, "--domain", city, "--tile-size", 128,
                    "--output-dir", output)
    return str(output)


def test_potsdam_to_vaihingen_real_crops(tmp_path, tiny_encoders):
    dataset = build_isprs_with_build_folder(tmp_path / "isprs")
    model_overrides = [value for key, setting in {**TINY_MODEL, "backbone": tiny_encoders[0],
                                                  "depth_backbone": tiny_encoders[1]}.items()
                       for value in (f"--model.{key}", str(setting))]
    run = load_run_config("potsdam_vaihingen", [
        "--dataset", dataset, "--output_dir", str(tmp_path / "out"), "--max_steps", "2",
        "--per_device_batch_size", "2", "--augmentation.crop_size", "64", "--report_to", "none",
        "--num_workers", "0", "--checkpointing_steps", "100", "--router_diagnostics_steps", "0", *model_overrides,
    ])
    trainer = Trainer(run)
    assert trainer.processor.image_mean == IMAGENET_MEAN  # the preset pins the paper's statistics
    results = trainer.train()

    assert set(results) == {"target_vaihingen"}
    metrics = results["target_vaihingen"]
    for key in ("mean_iou", "mean_accuracy", "overall_accuracy"):
        assert math.isfinite(metrics[key]) and 0 <= metrics[key] <= 100, (key, metrics[key])
    assert math.isfinite(metrics["baseline"]["mean_iou"])
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert all(torch.isfinite(p).all() for p in model.parameters() if p.requires_grad)
    # The eroded boundaries (label 0 in the release) are ignored: only the other pixels are scored.
    loader = evaluation_loader(trainer.dataset["target_vaihingen"], trainer.processor, batch_size=1)
    confusion = evaluate_split(model, loader, len(ISPRS_CLASSES), EvaluationConfig(mode="whole"))
    vaihingen_labels = np.stack([example["label"] for example in trainer.dataset["target_vaihingen"]])
    ignored = int((vaihingen_labels == IGNORE_INDEX).sum())
    assert len(trainer.dataset["train"]) == 16 and vaihingen_labels.shape == (16, 128, 128)
    assert ignored > 0 and int(confusion.matrix.sum()) == vaihingen_labels.size - ignored
    assert (confusion.matrix[5] == 0).all()  # no clutter in this crop: its accuracy is undefined, not 0
    assert math.isnan(metrics["per_category_accuracy"]["clutter"])
