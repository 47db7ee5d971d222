"""A STAC Item with the Machine Learning Model extension (MLM) beside a saved model's weights, so that geospatial
tools find the bands (names, central wavelengths, normalisation statistics in raw units), the input shape and the
classes a model expects.

The bands and classes live in `config.json`, the statistics in `preprocessor_config.json`: the model's and the image
processor's `save_pretrained` both call `write_stac_mlm`, which reads whichever of the two files the folder holds,
so the file is complete once both are saved, in either order."""

import json
import math
from pathlib import Path

import torch


STAC_MLM_FILE = "stac-mlm.json"
MLM_SCHEMA = "https://stac-extensions.github.io/mlm/v1.6.0/schema.json"
EO_SCHEMA = "https://stac-extensions.github.io/eo/v2.0.0/schema.json"
# A model is not tied to a time or place: the widest interval STAC allows, as the MLM examples use.
VALID_FROM, VALID_UNTIL = "1900-01-01T00:00:00Z", "9999-12-31T23:59:59Z"


def write_stac_mlm(folder, total_parameters: int | None = None) -> Path | None:
    """Writes (or completes) `folder/stac-mlm.json` from the folder's `config.json` and `preprocessor_config.json`.

    Args:
        folder: a saved model folder; nothing is written while it has no `config.json`.
        total_parameters: the model's parameter count (frozen encoders included); when `None`, the count an earlier
            save wrote is kept (the processor does not know it).

    Returns:
        The file's path, or `None` when the folder holds no model config yet.
    """
    folder = Path(folder)
    config = _read_json(folder / "config.json")
    if config is None:
        return None
    path = folder / STAC_MLM_FILE
    if total_parameters is None:
        total_parameters = (_read_json(path) or {}).get("properties", {}).get("mlm:total_parameters")
    processor = _read_json(folder / "preprocessor_config.json") or {}
    item = stac_mlm_item(config, processor, folder.name, total_parameters)
    path.write_text(json.dumps(item, indent=2) + "\n")
    return path


def stac_mlm_item(config: dict, processor: dict, name: str, total_parameters: int | None = None) -> dict:
    """The STAC Item (MLM extension) of a model from its config and image-processor dicts (as saved as JSON)."""
    bands = _bands(config, processor)
    properties = {
        "datetime": None, "start_datetime": VALID_FROM, "end_datetime": VALID_UNTIL,
        "description": f"SpectralMoE semantic segmenter ({len(bands)} input bands, {len(config['id2label'])} classes).",
        "mlm:name": name,
        "mlm:architecture": f"SpectralMoE ({config.get('adapter_type', 'spectralmoe')} adapter, Mask2Former head)",
        "mlm:tasks": ["semantic-segmentation"],
        "mlm:framework": "pytorch",
        "mlm:framework_version": torch.__version__.split("+")[0],
        "mlm:accelerator": "cpu",
        "mlm:accelerator_constrained": False,
        "mlm:accelerator_summary": "CPU or any torch accelerator (CUDA, MPS)",
        "mlm:pretrained": True,
        "mlm:input": [_input(bands, processor)],
        "mlm:output": [_output(config)],
    }
    if total_parameters is not None:
        properties["mlm:total_parameters"] = total_parameters
    return {
        "type": "Feature", "stac_version": "1.1.0", "stac_extensions": [MLM_SCHEMA, EO_SCHEMA], "id": name,
        "geometry": None, "properties": properties, "links": [],
        "assets": {
            "weights": {
                "href": "./model.safetensors", "title": "Trained weights (safetensors)",
                "type": "application/octet-stream; application=safetensors",
                "roles": ["mlm:model", "mlm:weights", "data"], "mlm:artifact_type": "safetensors",
                "bands": bands,
            },
            "config": {"href": "./config.json", "type": "application/json", "roles": ["mlm:model", "metadata"]},
        },
    }


def _bands(config: dict, processor: dict) -> list[dict]:
    """STAC 1.1 common-metadata bands: name, central wavelength (µm) and, once the processor is saved, the raw-unit
    mean and standard deviation used to normalise it, the raw data type (its value range) and the no-data value."""
    count = config.get("num_channels") or len(processor.get("image_mean") or ())
    names = config.get("band_names") or processor.get("band_names") or [f"band_{i}" for i in range(count)]
    wavelengths = config.get("wavelengths") or processor.get("wavelengths") or [None] * count
    bands = []
    for index, (name, wavelength) in enumerate(zip(names, wavelengths)):
        band = {"name": name}
        if wavelength is not None:
            band["eo:center_wavelength"] = wavelength
        if processor.get("image_mean"):
            band["statistics"] = {"mean": processor["image_mean"][index], "stddev": processor["image_std"][index]}
        if processor.get("input_dtype"):
            band["data_type"] = processor["input_dtype"]
        if isinstance(processor.get("nodata_value"), (int, float)) and math.isfinite(processor["nodata_value"]):
            band["nodata"] = processor["nodata_value"]
        bands.append(band)
    return bands


def _input(bands: list[dict], processor: dict) -> dict:
    """Raw bands in, any numeric type (the processor casts to float32); z-score per band."""
    model_input = {
        "name": "bands in raw units (digital numbers, reflectance x 10000, ...)",
        "bands": [band["name"] for band in bands],
        "input": {"shape": [-1, len(bands), -1, -1], "dim_order": ["batch", "bands", "height", "width"],
                  "data_type": "float32"},
        "pre_processing_function": {
            "format": "python", "expression": "image_processing_spectralmoe:SpectralMoEImageProcessor.preprocess"},
    }
    if processor.get("image_mean"):
        model_input["value_scaling"] = [{"type": "z-score", **band["statistics"]} for band in bands]
    if processor.get("do_resize"):
        model_input["resize_type"] = "interpolation-linear"
    return model_input


def _output(config: dict) -> dict:
    classes = [{"value": int(value), "name": name} for value, name in sorted(
        (int(value), name) for value, name in config["id2label"].items())]
    return {
        "name": "class map",
        "tasks": ["semantic-segmentation"],
        "result": {"shape": [-1, len(classes), -1, -1], "dim_order": ["batch", "class", "height", "width"],
                   "data_type": "float32"},
        "classification:classes": classes,
        "post_processing_function": {
            "format": "python",
            "expression": "image_processing_spectralmoe:SpectralMoEImageProcessor.post_process_semantic_segmentation"},
    }


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None
