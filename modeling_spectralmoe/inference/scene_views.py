"""Pictures of one scene's prediction for people to look at, as the Space in `examples/space` shows them: the input in
natural colours, the class map in its legend's colours (plain and over the image), the confidence map, and the expert
routing map of one adapted layer and gate. They are drawn from the rasters `predict_raster` writes, so they show
exactly what the command line and the Inference Endpoint return.

Pictures are (H, W, 3) uint8 RGB arrays at the scene's size; no-data pixels are black in every picture.
"""

import html
import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .outputs import default_palette
from .predict import predict_raster
from .raster import raster_environment


NODATA_COLOR = (0, 0, 0)
# Stops of the confidence colour ramp (0 %, 50 %, 100 %): dark violet, teal, yellow (after viridis).
CONFIDENCE_STOPS = ((0.0, (68, 1, 84)), (50.0, (33, 145, 140)), (100.0, (253, 231, 37)))
STRETCH_PERCENTILES = (2, 98)
# Window settings of the pictures: the engine's window, and a stride on the 16-px token grid (needed by expert maps)
# close to the paper's 341.
WINDOW, STRIDE = 512, 336


@dataclass
class ScenePrediction:
    """One scene and its predicted maps, read back from `predict_raster`'s outputs.

    Args:
        image (`np.ndarray` of shape `(H, W, 3)`, uint8): the input's R, G, B bands (its first band in grey when the
            model names no RGB bands), each stretched between its 2nd and 98th percentile.
        valid (`np.ndarray` of shape `(H, W)`, bool): pixels with data.
        classes (`np.ndarray` of shape `(H, W)`): class index per pixel (the class map's nodata where not `valid`).
        confidence (`np.ndarray` of shape `(H, W)`, uint8): 0-100 %, 255 where not `valid`.
        class_names (`list[str]`): names by class index.
        experts (`np.ndarray` of shape `(bands, H / p, W / p)`, uint8, *optional*): top-1 expert per token of each
            layer and gate (255: no data); `None` for a model without routing.
        expert_bands (`list[str]`): the bands of `experts`, e.g. `"layer 3 spectral gate"`.
        num_experts (`int`): experts per gate.
        patch_size (`int`): pixels per token side.
    """

    image: np.ndarray
    valid: np.ndarray
    classes: np.ndarray
    confidence: np.ndarray
    class_names: list
    experts: np.ndarray | None
    expert_bands: list
    num_experts: int
    patch_size: int


def predict_scene(model, processor, path, window: int = WINDOW, stride: int = STRIDE) -> ScenePrediction:
    """Predicts a raster (GeoTIFF, PNG, ... with the model's bands) with `predict_raster` and reads its maps back."""
    routed = model.config.adapter_type == "spectralmoe"
    outputs = ("classes", "confidence", "experts") if routed else ("classes", "confidence")
    with tempfile.TemporaryDirectory() as output_dir, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*has no CRS")  # pictures need none
        result = predict_raster(model, processor, path, output_dir, outputs=outputs, window=window, stride=stride,
                                progress=False)
        sidecar = json.loads(Path(result.paths["sidecar"]).read_text())
        classes, confidence = _read(result.paths["classes"])[0], _read(result.paths["confidence"])[0]
        experts = _read(result.paths["experts"]) if routed else None
    valid = confidence != 255
    rgb_bands = model.config.depth_rgb_bands or [0, 0, 0]
    indexes = [sidecar["bands"]["indexes"][band] for band in rgb_bands]
    return ScenePrediction(
        image=natural_colours(_read(path, indexes), valid), valid=valid, classes=classes, confidence=confidence,
        class_names=sidecar["class_names"], experts=experts, expert_bands=sidecar["expert_bands"],
        num_experts=model.config.num_experts, patch_size=model.visual_encoder.patch_size,
    )


def _read(path, indexes=None) -> np.ndarray:
    import rasterio

    with raster_environment(), rasterio.open(path) as source:
        return source.read(indexes)


def natural_colours(bands: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 of three bands (3, H, W), each stretched between its 2nd and 98th percentile over `valid`."""
    picture = np.zeros((*bands.shape[1:], 3), dtype=np.uint8)
    for channel, band in enumerate(bands.astype(np.float64)):
        low, high = np.percentile(band[valid], STRETCH_PERCENTILES) if valid.any() else (0.0, 1.0)
        picture[..., channel] = np.clip((band - low) / max(high - low, 1e-12) * 255, 0, 255).round()
    picture[~valid] = NODATA_COLOR
    return picture


def palette(count: int) -> np.ndarray:
    """(count, 3) uint8: the colours of the class map's colour table (`default_palette`) by index."""
    return np.array([colour[:3] for colour in default_palette(count).values()], dtype=np.uint8).reshape(count, 3)


def colorize(indexes: np.ndarray, colours: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: the colour of each index; black where not `valid`."""
    picture = colours[np.where(valid, indexes, 0)]
    picture[~valid] = NODATA_COLOR
    return picture


def class_map_image(prediction: ScenePrediction) -> np.ndarray:
    """The class map in the legend's colours, one pixel per scene pixel, nothing blended."""
    return colorize(prediction.classes, palette(len(prediction.class_names)), prediction.valid)


def overlay_image(prediction: ScenePrediction, opacity: float = 0.45) -> np.ndarray:
    """The class map's colours over the natural-colour image."""
    blended = (1 - opacity) * prediction.image + opacity * class_map_image(prediction)
    return blended.round().astype(np.uint8)


def confidence_image(prediction: ScenePrediction) -> np.ndarray:
    """Confidence on a violet (0 %) to yellow (100 %) ramp."""
    stops = np.array([stop for stop, _ in CONFIDENCE_STOPS])
    picture = np.stack([np.interp(prediction.confidence, stops, [colour[channel] for _, colour in CONFIDENCE_STOPS])
                        for channel in range(3)], axis=-1).round().astype(np.uint8)
    picture[~prediction.valid] = NODATA_COLOR
    return picture


def expert_map_image(prediction: ScenePrediction, band: str) -> np.ndarray:
    """The top-1 expert of one layer and gate (`band`, one of `expert_bands`), each token drawn over its pixels."""
    if prediction.experts is None:
        raise ValueError("This model routes nothing: it has no expert maps.")
    if band not in prediction.expert_bands:
        raise ValueError(f"No expert map {band!r}; the maps are {prediction.expert_bands}.")
    tokens = prediction.experts[prediction.expert_bands.index(band)]
    pixels = np.repeat(np.repeat(tokens, prediction.patch_size, 0), prediction.patch_size, 1)
    height, width = prediction.classes.shape
    return colorize(pixels[:height, :width], palette(prediction.num_experts), prediction.valid)


def legend(names: list[str]) -> list[tuple[str, str]]:
    """(name, "#rrggbb") by index, in the colours of `palette`."""
    return [(name, "#{:02x}{:02x}{:02x}".format(*colour)) for name, colour in zip(names, palette(len(names)))]


def legend_html(names: list[str], kind: str = "class") -> str:
    """A legend as HTML: one swatch per entry, each carrying its index and colour (`data-index`, `data-color`)."""
    entries = "".join(
        f'<span class="legend-entry" data-{kind}-index="{index}" data-color="{colour}" '
        f'style="display:inline-flex;align-items:center;margin-right:1em">'
        f'<span style="width:1em;height:1em;background:{colour};margin-right:0.3em;display:inline-block"></span>'
        f"{html.escape(name)}</span>"
        for index, (name, colour) in enumerate(legend(names))
    )
    return f'<div class="legend legend-{kind}">{entries}</div>'


__all__ = ["ScenePrediction", "class_map_image", "confidence_image", "expert_map_image", "legend", "legend_html",
           "natural_colours", "overlay_image", "palette", "predict_scene"]
