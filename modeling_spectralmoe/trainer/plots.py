"""Figures of a trained model: per-domain scores next to the majority-class baseline, and predictions per domain."""

import numpy as np
import torch

from ..configuration_spectralmoe import rgb_band_indices
from ..data.loading import split_bands
from ..data.schema import with_native_numpy_format
from ..evaluation.protocol import MEAN_OVER_DOMAINS


DOMAIN_CHART = "per_domain_miou.png"
PREDICTIONS = "predictions.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_domain_chart(results: dict[str, dict], path) -> None:
    """Bar chart of mIoU per domain (and pooled), with the majority-class baseline as a hatched bar."""
    plt = _pyplot()
    names = [name for name in results if name != MEAN_OVER_DOMAINS]
    scores = [results[name]["mean_iou"] for name in names]
    baselines = [results[name].get("baseline", {}).get("mean_iou", np.nan) for name in names]
    positions = np.arange(len(names))
    figure, axis = plt.subplots(figsize=(1.6 * len(names) + 2, 3.6))
    axis.bar(positions - 0.2, scores, width=0.4, label="model")
    axis.bar(positions + 0.2, baselines, width=0.4, label="majority class", hatch="//", color="lightgrey")
    for x, score in zip(positions, scores):
        axis.text(x - 0.2, score + 1, f"{score:.1f}", ha="center", fontsize=8)
    axis.set_xticks(positions, [name.replace("_", "\n") for name in names], fontsize=8)
    axis.set_ylabel("mIoU (%)")
    axis.set_ylim(0, 105)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def display_rgb(pixel_values: np.ndarray, rgb_bands: list[int] | None, valid: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) image in [0, 1] from raw (C, H, W) bands: the bands named R, G, B (else the first three, or the
    single band as grey), each stretched between its 2nd and 98th percentile over the `valid` pixels; no-data pixels
    (not `valid`) are black."""
    bands = rgb_bands or list(range(min(3, pixel_values.shape[0])))
    image = pixel_values[bands].astype(np.float64)
    if image.shape[0] == 1:
        image = np.repeat(image, 3, axis=0)
    valid = np.ones(image.shape[1:], dtype=bool) if valid is None else valid
    if not valid.any():
        return np.zeros((*image.shape[1:], 3))
    low, high = np.percentile(image[:, valid], [2, 98], axis=1)[..., None, None]
    stretched = np.clip((image - low) / np.maximum(high - low, 1e-6), 0, 1)
    return np.where(valid, stretched, 0).transpose(1, 2, 0)


@torch.no_grad()
def save_prediction_grid(model, processor, dataset, splits: list[str], metadata, id2label, path) -> None:
    """One row per split: the first image, its label and the model's prediction, each split with its own bands
    (`split_bands`); ignored and no-data pixels in black."""
    plt = _pyplot()
    colours = plt.get_cmap("tab20").colors
    palette = np.array([colours[i % len(colours)] for i in range(len(id2label))] + [(0.0, 0.0, 0.0)])
    figure, axes = plt.subplots(len(splits), 3, figsize=(7.5, 2.6 * len(splits)), squeeze=False)
    for row, split in zip(axes, splits):
        example = with_native_numpy_format(dataset[split])[0]
        bands = split_bands(dataset[split], metadata, model.config)
        inputs = processor(example["pixel_values"], input_data_format="channels_first", return_tensors="pt", **bands)
        outputs = model(pixel_values=inputs["pixel_values"].to(model.device), **bands)
        prediction = processor.post_process_semantic_segmentation(
            outputs, target_sizes=[example["label"].shape], pixel_mask=inputs["pixel_mask"])[0].cpu().numpy()
        label = np.where(example["label"] == 255, len(id2label), example["label"])
        prediction = np.where(prediction == 255, len(id2label), prediction)
        valid = inputs["pixel_mask"][0, : label.shape[0], : label.shape[1]].numpy().astype(bool)
        rgb_bands = rgb_band_indices(bands.get("band_names") or metadata.band_names, bands.get("wavelengths"))
        panels = (display_rgb(example["pixel_values"], rgb_bands, valid), palette[label], palette[prediction])
        for axis, panel, title in zip(row, panels, (split, "label", "prediction")):
            axis.imshow(panel, interpolation="nearest")
            axis.set_title(title, fontsize=9)
            axis.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=palette[i]) for i in range(len(id2label))]
    figure.legend(handles, [id2label[i] for i in range(len(id2label))], loc="lower center",
                  ncol=min(6, len(id2label)), fontsize=8)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    figure.savefig(path, dpi=100)
    plt.close(figure)
