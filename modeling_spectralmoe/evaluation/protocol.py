"""Evaluation protocol of SpectralMoE (arXiv 2603.13352, experimental setup): whole-image or sliding-window inference,
metrics per target domain and on the pooled target set, next to a majority-class baseline."""

import json
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.loading import evaluation_loader, split_bands
from ..data.schema import with_native_numpy_format
from ..image_processing_spectralmoe import UNSEEN_BAND_RULE
from ..inference.windows import BLENDS, check_window_settings, sliding_window_scores
from .segmentation_metric import ConfusionMatrix, label_histogram, majority_class_baseline


EVALUATION_MODES = ("whole", "slide")


@dataclass
class EvaluationConfig:
    """How target images are evaluated.

    Args:
        mode: `"whole"` (one pass per image) or `"slide"` (windows of `crop` pixels every `stride`, blended).
        crop: sliding-window side.
        stride: sliding-window step (341 for 512 windows in the paper); at most `crop`, so every pixel is predicted.
        blend: how overlapping windows combine (`"mean"`, the paper's protocol; see `inference.windows`).
        batch_size: images per evaluation batch.
    """

    mode: str = field(default="whole", metadata={"choices": EVALUATION_MODES})
    crop: int = field(default=512, metadata={"minimum": 1})
    stride: int = field(default=341, metadata={"minimum": 1})
    blend: str = field(default="mean", metadata={"choices": BLENDS})
    batch_size: int = field(default=1, metadata={"minimum": 1})

    def __post_init__(self):
        if self.mode == "slide":
            check_window_settings(self.crop, self.stride, self.blend)


VALIDATION = "validation"
POOLED = "pooled_targets"
MEAN_OVER_DOMAINS = "mean_over_target_domains"


@torch.no_grad()
def predict_logits(model, pixel_values: torch.Tensor, config: EvaluationConfig, **bands) -> torch.Tensor:
    """Per-class scores (B, K, H, W) for normalised (B, C, H, W) images, whole or by blended sliding windows (the
    engine that scene prediction uses too); `bands`: the images' own `band_names` / `wavelengths`, if not the
    model's."""
    if config.mode == "whole":
        return model(pixel_values=pixel_values, **bands).logits
    if config.mode != "slide":
        raise ValueError(f"Evaluation mode must be 'whole' or 'slide', found {config.mode!r}.")
    return sliding_window_scores(model, pixel_values, config.crop, config.stride, config.blend, **bands)


def evaluate_split(model, batches, num_labels: int, config: EvaluationConfig, description: str = "") -> ConfusionMatrix:
    """Confusion matrix of one split; `batches` yields dicts with `pixel_values` and `labels` (padding and no-data
    are 255 in the labels, hence not scored), and the split's `band_names` / `wavelengths` where they are not the
    model's. The matrix lives on the model's device, as NCCL needs for all_reduce."""
    device = next(model.parameters()).device
    confusion = ConfusionMatrix(num_labels, device=device)
    for batch in tqdm(batches, desc=f"eval {description}", leave=False):
        bands = {key: batch[key] for key in ("band_names", "wavelengths") if key in batch}
        logits = predict_logits(model, batch["pixel_values"].to(device), config, **bands)
        confusion.update(logits.argmax(1).cpu(), batch["labels"])
    return confusion


def source_label_counts(split, num_labels: int) -> torch.Tensor:
    """Pixel count of each class over a (source) split, for the majority-class baseline."""
    counts = torch.zeros(num_labels, dtype=torch.long)
    for example in with_native_numpy_format(split):
        counts += label_histogram(example["label"].astype("int64"), num_labels)
    return counts


def check_dataset_matches_model(model_config, metadata) -> list[str]:
    """Refuses a dataset whose classes differ from the model's (every metric would be silently wrong); returns
    warnings for band names that differ, which cross-band settings such as Potsdam -> Vaihingen do on purpose."""
    model_classes = {int(k): v for k, v in model_config.id2label.items()}
    if model_classes != metadata.id2label:
        raise ValueError(f"The dataset's classes {metadata.id2label} differ from the model's {model_classes}.")
    if len(metadata.band_names) != model_config.num_channels and not model_config.uses_dofa:
        raise ValueError(
            f"The dataset has {len(metadata.band_names)} bands {metadata.band_names}, the model expects "
            f"{model_config.num_channels} {model_config.band_names or ''}."
        )
    if model_config.band_names and list(metadata.band_names) != list(model_config.band_names):
        return [f"The dataset's bands {metadata.band_names} are not the model's {model_config.band_names}: "
                "fine for a cross-band evaluation, wrong otherwise."]
    return []


def evaluate_dataset(
    model, processor, dataset, source_split: str, config: EvaluationConfig,
    process_index: int = 0, num_processes: int = 1, source_counts: torch.Tensor | None = None, metadata=None,
) -> dict[str, dict]:
    """Metrics of the source validation split (if any) and of every target split, each process evaluating a disjoint
    share of the images and the confusion matrices summed over processes, plus the pooled target set, the mean over
    target domains and the majority-class baseline (from the source split's label counts).

    With the dataset's `metadata`, a split whose domain has its own bands is fed them (`data.loading.split_bands`);
    its entry records where each band's normalisation statistics came from (`normalization`)."""
    target_splits = [split for split in dataset if split not in (source_split, VALIDATION)]
    num_labels = len(model.config.id2label)
    model.eval()
    confusions, normalization = {}, {}
    for split in [s for s in (VALIDATION, *target_splits) if s in dataset]:
        bands = {} if metadata is None else split_bands(dataset[split], metadata, model.config)
        if bands:
            normalization[split] = band_normalization_record(processor, bands)
        loader = evaluation_loader(dataset[split], processor, config.batch_size, process_index, num_processes,
                                   bands=bands)
        confusions[split] = evaluate_split(model, loader, num_labels, config, split).all_reduce()
    if source_counts is None:
        source_counts = source_label_counts(dataset[source_split], num_labels)
    results = summarize(confusions, target_splits, model.config.id2label, source_counts)
    for split, record in normalization.items():
        results[split]["normalization"] = record
    return results


def band_normalization_record(processor, bands: dict) -> dict:
    """Which trained band's statistics each band of a split took, and by which rule (for the results)."""
    mean, std, sources = processor.band_statistics(bands.get("band_names"), bands.get("wavelengths"))
    names = bands.get("band_names") or [f"band {index}" for index in range(len(mean))]
    return {"rule": UNSEEN_BAND_RULE,
            "bands": {name: {"statistics_of": source, "mean": m, "std": s}
                      for name, source, m, s in zip(names, sources, mean, std)}}


def summarize(
    confusions: dict[str, ConfusionMatrix],
    target_splits: list[str],
    id2label: dict[int, str],
    source_label_counts: torch.Tensor | None = None,
) -> dict[str, dict]:
    """Metrics per split, on the pooled target set (one confusion matrix over all target images) and their mean over
    target domains; with `source_label_counts`, the majority-class baseline of each entry under `baseline`."""
    results = {}
    entries = dict(confusions)
    present_targets = [split for split in target_splits if split in confusions]
    if len(present_targets) > 1:
        entries[POOLED] = ConfusionMatrix(len(id2label)).merge(*(confusions[s] for s in present_targets))
    for name, confusion in entries.items():
        metrics = _readable(confusion.compute(), id2label)
        if source_label_counts is not None:
            metrics["baseline"] = _readable(majority_class_baseline(source_label_counts, confusion), id2label)
        results[name] = metrics
    if len(present_targets) > 1:
        results[MEAN_OVER_DOMAINS] = {
            key: float(np.mean([results[split][key] for split in present_targets]))
            for key in ("mean_iou", "mean_accuracy", "overall_accuracy")
        }
    return results


def _readable(metrics: dict, id2label: dict[int, str]) -> dict:
    """Scalars as floats (in %), per-class arrays as {class name: value}, the baseline's class index as its name."""
    readable = {}
    for key, value in metrics.items():
        if key == "majority_class":
            readable[key] = id2label[int(value)]
        elif np.ndim(value) == 0:
            readable[key] = float(value) * 100
        else:
            readable[key] = {id2label[index]: float(v) * 100 for index, v in enumerate(value)}
    return readable


def results_json(results: dict) -> str:
    """Results as strict JSON: NaN (a class absent from labels and predictions) becomes `null`, which jq and
    JavaScript read."""

    def strict(value):
        if isinstance(value, dict):
            return {key: strict(item) for key, item in value.items()}
        if isinstance(value, list):
            return [strict(item) for item in value]
        return None if isinstance(value, float) and math.isnan(value) else value

    return json.dumps(strict(results), indent=2, allow_nan=False) + "\n"


def format_table(results: dict[str, dict], title: str = "") -> str:
    """A plain-text table: one row per domain with mIoU, mAcc, aAcc and the majority-class baseline's mIoU."""
    header = f"{'domain':<28}{'mIoU':>8}{'mAcc':>8}{'aAcc':>8}{'majority-class mIoU':>21}"
    lines = [title, header, "-" * len(header)] if title else [header, "-" * len(header)]
    for name, metrics in results.items():
        baseline = metrics.get("baseline", {}).get("mean_iou")
        baseline_text = f"{baseline:>21.2f}" if baseline is not None else f"{'':>21}"
        lines.append(
            f"{name:<28}{metrics['mean_iou']:>8.2f}{metrics['mean_accuracy']:>8.2f}"
            f"{metrics['overall_accuracy']:>8.2f}{baseline_text}"
        )
    return "\n".join(lines)
