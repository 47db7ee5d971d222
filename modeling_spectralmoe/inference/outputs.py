"""What scene prediction writes per scene, and how blended scores become those rasters.

- `classes`: the class of each pixel (uint8; uint16 beyond 254 classes), with a colour table and the class names.
- `confidence`: 0-100 (uint8), the blended score of the chosen class over the sum of all classes' scores (the
  Mask2Former semantic scores are non-negative and not normalised, hence the division).
- `probabilities`: one band per class, each class's share of the scores scaled to 0-254 (uint8).
- `experts`: for each chosen adapted layer and gate (spectral, then depth), the top-1 expert of the blended routing
  probabilities, on the encoder's token grid (one pixel per patch).
Every output keeps the input's nodata pixels as its own nodata value.
"""

import colorsys
import json
from pathlib import Path

import numpy as np
import torch

from .raster import OutputSpec


OUTPUT_KINDS = ("classes", "confidence", "probabilities", "experts")
BYTE_NODATA = 255


def class_dtype(num_classes: int) -> tuple[str, int]:
    """dtype and nodata of a class map: uint8 up to 254 classes (255 is nodata), uint16 beyond."""
    return ("uint8", 255) if num_classes <= 254 else ("uint16", 65535)


def default_palette(num_classes: int) -> dict[int, tuple[int, int, int, int]]:
    """Distinct colours: hues a golden angle apart, alternating brightness."""
    palette = {}
    for index in range(num_classes):
        red, green, blue = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.75, 0.95 if index % 2 else 0.7)
        palette[index] = (round(red * 255), round(green * 255), round(blue * 255), 255)
    return palette


def output_specs(output_dir: Path, stem: str, outputs, id2label: dict, patch_size: int,
                 expert_bands: list[str]) -> dict[str, OutputSpec]:
    """The rasters of one scene by kind."""
    class_names = [id2label[index] for index in sorted(id2label)]
    dtype, nodata = class_dtype(len(class_names))
    names_tag = {"class_names": json.dumps(class_names)}
    specs = {
        "classes": OutputSpec(output_dir / f"{stem}_classes.tif", 1, dtype, nodata, descriptions=["class"],
                              tags=names_tag, colormap=default_palette(len(class_names))),
        "confidence": OutputSpec(output_dir / f"{stem}_confidence.tif", 1, "uint8", BYTE_NODATA, resampling="average",
                                 descriptions=["confidence (%)"]),
        "probabilities": OutputSpec(output_dir / f"{stem}_probabilities.tif", len(class_names), "uint8", BYTE_NODATA,
                                    resampling="average", descriptions=class_names,
                                    tags={**names_tag, "scale": "class share x 254"}),
        "experts": OutputSpec(output_dir / f"{stem}_experts.tif", len(expert_bands), "uint8", BYTE_NODATA,
                              scale=patch_size, descriptions=expert_bands,
                              tags={"content": "top-1 expert per token", "patch_size": str(patch_size)}),
    }
    return {kind: specs[kind] for kind in outputs}


def pixel_outputs(scores: torch.Tensor, valid: np.ndarray, outputs, class_nodata: int) -> dict[str, np.ndarray]:
    """Rasters (bands, n, w) of the requested pixel-level outputs from blended scores (K, n, w) and validity (n, w)."""
    arrays = {}
    if "classes" in outputs:
        arrays["classes"] = np.where(valid, scores.argmax(0).numpy(), class_nodata)[None]
    scores = scores.clamp(min=0)
    total = scores.sum(0)
    share = scores.div_(total.masked_fill_(total == 0, 1)).numpy()  # in place: strips of wide scenes are large
    if "confidence" in outputs:
        arrays["confidence"] = np.where(valid, np.rint(share.max(0) * 100), BYTE_NODATA)[None]
    if "probabilities" in outputs:
        arrays["probabilities"] = np.where(valid, np.rint(share * 254), BYTE_NODATA)
    return arrays


def expert_output(gates: torch.Tensor, valid: np.ndarray, num_experts: int) -> np.ndarray:
    """Top-1 expert (bands, n, w) of blended gates (bands x num_experts, n, w) on the token grid; `valid` (n, w) is
    True for tokens with at least one valid pixel."""
    top1 = gates.unflatten(0, (-1, num_experts)).argmax(1).numpy()
    return np.where(valid, top1, BYTE_NODATA)


def token_validity(valid: np.ndarray, patch_size: int) -> np.ndarray:
    """(n / p, w / p): True where a patch holds at least one valid pixel."""
    rows, columns = valid.shape[0] // patch_size, valid.shape[1] // patch_size
    return valid.reshape(rows, patch_size, columns, patch_size).any(axis=(1, 3))


__all__ = ["OUTPUT_KINDS", "class_dtype", "default_palette", "expert_output", "output_specs", "pixel_outputs"]
