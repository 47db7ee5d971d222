"""Scene prediction behind a JSON API: what the Inference Endpoint handler written by `spectralmoe-export-endpoint`
calls (the handler itself only delegates here). Every scene goes through `predict_raster`, the engine of the
command line.

Requests are JSON: the Endpoint toolkit decodes `image/tiff` bodies with PIL as RGB, which drops every other band.

    {"inputs": {"geotiff_b64": "<base64 GeoTIFF>"}
             | {"url": "https://.../scene.tif"}
             | {"array": [[[...]]]}                                     # nested lists (C, H, W) or (H, W)
             | {"array": {"data": [...] | "<base64 raw bytes>", "shape": [C, H, W], "dtype": "uint16"}},
     "parameters": {"bands": [4, 3, 2] | ["B04", "B03", "B02"], "wavelengths": [...],
                    "outputs": ["classes", "confidence", "probabilities", "experts"], "window": 512, "stride": 341,
                    "blend": "cosine", "expert_layers": [...], "nodata": 0, "format": "geotiff" | "array"}}

Every parameter is optional (the engine's defaults; see `PredictConfig`). Responses:

    {"crs": "EPSG:32633" | null, "transform": [a, b, c, d, e, f], "height": H, "width": W,
     "bands": {"indexes": [...], "names": [...], "wavelengths": [...]}, "class_names": [...],
     "windows": n, "skipped_windows": n, "seconds": s, "warnings": [...],
     "outputs": {"classes": {"geotiff_b64": "<base64 COG>", "dtype": "uint8", "nodata": 255, "shape": [1, H, W],
                             "transform": [...], "band_descriptions": ["class"]},
                 "confidence": {...}, ...}}

An output holds `"data"` (nested lists, `shape`) instead of `"geotiff_b64"` when `format` is `"array"`, the default
for array inputs (which have no CRS: `crs` is null and the transform the identity). Expert maps lie on the token grid:
their own transform is the scene's scaled by the patch size.

A bad request gets `{"error": "<what was expected and found>", "status": 400}` (413 when the scene exceeds the pixel
or byte limit), an unexpected failure `{"error": ..., "status": 500}`; never a traceback. Limits, per endpoint:
`max_pixels` (height x width, default 25 million, env `SPECTRALMOE_ENDPOINT_MAX_PIXELS`) and `max_bytes` (of the
decoded file or array, default 512 MiB, env `SPECTRALMOE_ENDPOINT_MAX_BYTES`).
"""

import base64
import binascii
import http.client
import json
import logging
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.io import MemoryFile
from rasterio.transform import Affine

from .predict import PredictConfig, load_model, predict_raster
from .raster import raster_environment, read_scene_info


logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 25_000_000
DEFAULT_MAX_BYTES = 512 * 2**20
MAX_PIXELS_ENV = "SPECTRALMOE_ENDPOINT_MAX_PIXELS"
MAX_BYTES_ENV = "SPECTRALMOE_ENDPOINT_MAX_BYTES"
INPUT_KINDS = ("geotiff_b64", "url", "array")
FORMATS = ("geotiff", "array")
# Request parameters passed on to `PredictConfig` (the others, such as `device` or `band_file`, are the server's).
ENGINE_PARAMETERS = ("bands", "wavelengths", "outputs", "window", "stride", "blend", "expert_layers", "nodata")
INPUT_NAME = "input.tif"


class RequestError(Exception):
    """A request the endpoint cannot serve, with the HTTP status that says why (4xx)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class SceneEndpoint:
    """Predicts the scene of a JSON request (see the module's docstring) with a model loaded once.

    Args:
        model_path (`str`): saved model folder or Hub id.
        max_pixels (`int`, *optional*): largest scene served, in pixels (default: env or 25 million).
        max_bytes (`int`, *optional*): largest decoded input served, in bytes (default: env or 512 MiB).
        url_timeout (`float`, defaults to 60): seconds allowed to fetch a `url` input.
        device (`str`, *optional*): default CUDA when available, else CPU.
    """

    def __init__(self, model_path: str, max_pixels: int | None = None, max_bytes: int | None = None,
                 url_timeout: float = 60.0, device: str | None = None):
        self.model, self.processor = load_model(str(model_path), device=device)
        self.max_pixels = max_pixels or int(os.environ.get(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS))
        self.max_bytes = max_bytes or int(os.environ.get(MAX_BYTES_ENV, DEFAULT_MAX_BYTES))
        self.url_timeout = url_timeout

    def __call__(self, data) -> dict:
        try:
            return self.predict(data)
        except RequestError as error:
            return {"error": str(error), "status": error.status}
        except Exception as error:  # noqa: BLE001 - an endpoint answers, it does not crash
            logger.exception("Scene prediction failed")
            return {"error": f"Internal error ({type(error).__name__}): {error}", "status": 500}

    def predict(self, data) -> dict:
        """The response to one request; raises `RequestError` for a bad one."""
        if not isinstance(data, dict):
            raise RequestError(f"The request must be a JSON object with `inputs`, found {type(data).__name__}.")
        inputs, parameters = data.get("inputs"), data.get("parameters") or {}
        kind = _input_kind(inputs)
        config, output_format = _settings(parameters, default_format="array" if kind == "array" else "geotiff")
        # The engine's warnings (units, missing CRS) are the client's to read: returned, not logged.
        with warnings.catch_warnings(record=True) as caught, raster_environment(), \
                self._scene_file(kind, inputs[kind]) as scene, tempfile.TemporaryDirectory() as output_dir:
            info = read_scene_info(scene.name)
            try:
                result = predict_raster(self.model, self.processor, scene.name, output_dir, config)
            except ValueError as error:  # the engine's checks of bands and settings against the model
                raise RequestError(str(error).replace(scene.name, "the input")) from None
            sidecar = json.loads(Path(result.paths["sidecar"]).read_text())
            outputs = {name: _encode_output(path, output_format, info.transform) for name, path in result.paths.items()
                       if name != "sidecar"}
            messages = [str(warning.message).replace(scene.name, "the input") for warning in caught]
        if kind == "array":  # arrays never have a CRS: no need to say so
            messages = [message for message in messages if "has no CRS" not in message]
        return {
            "crs": sidecar["crs"], "transform": list(info.transform)[:6], "height": info.height, "width": info.width,
            "bands": sidecar["bands"], "class_names": sidecar["class_names"], "windows": result.windows,
            "skipped_windows": result.skipped_windows, "seconds": round(result.seconds, 3), "warnings": messages,
            "outputs": outputs,
        }

    def _scene_file(self, kind: str, value) -> MemoryFile:
        """The request's scene as an in-memory GeoTIFF, checked against the limits before any pixel is decoded."""
        if kind == "array":
            return self._array_file(_decode_array(value, self.max_bytes))
        content = _decode_base64(value, "geotiff_b64", self.max_bytes) if kind == "geotiff_b64" else \
            _fetch(value, self.max_bytes, self.url_timeout)
        scene = MemoryFile(content, filename=INPUT_NAME)
        try:
            with scene.open() as source:
                driver, height, width = source.driver, source.height, source.width
        except rasterio.errors.RasterioIOError as error:
            message = str(error).replace(f"'{scene.name}' ", "it is ")
            scene.close()
            raise RequestError(f"`{kind}` must hold a GeoTIFF; GDAL cannot read it: {message}") from None
        if driver != "GTiff":
            scene.close()
            raise RequestError(f"`{kind}` must hold a GeoTIFF, found a {driver} file.")
        self._check_size(height, width, scene)
        return scene

    def _array_file(self, array: np.ndarray) -> MemoryFile:
        scene = MemoryFile(filename=INPUT_NAME)
        self._check_size(*array.shape[1:], scene)
        with scene.open(driver="GTiff", count=array.shape[0], height=array.shape[1], width=array.shape[2],
                        dtype=array.dtype.name) as target:
            target.write(array)
        return scene

    def _check_size(self, height: int, width: int, scene: MemoryFile) -> None:
        if height * width > self.max_pixels:
            scene.close()
            raise RequestError(f"The scene has {height} x {width} = {height * width} pixels; this endpoint serves at "
                               f"most {self.max_pixels} ({MAX_PIXELS_ENV}). Split it into tiles.", status=413)


def _input_kind(inputs) -> str:
    if not isinstance(inputs, dict):
        raise RequestError(f"`inputs` must be an object with one of {INPUT_KINDS}, found "
                           f"{'nothing' if inputs is None else type(inputs).__name__}.")
    kinds = [kind for kind in INPUT_KINDS if kind in inputs]
    if len(kinds) != 1:
        raise RequestError(f"`inputs` must hold exactly one of {INPUT_KINDS}, found {sorted(inputs)}.")
    return kinds[0]


def _settings(parameters, default_format: str) -> tuple[PredictConfig, str]:
    """The engine's settings and the response format of a request's `parameters`."""
    if not isinstance(parameters, dict):
        raise RequestError(f"`parameters` must be a JSON object, found {type(parameters).__name__}.")
    unknown = sorted(set(parameters) - {*ENGINE_PARAMETERS, "format"})
    if unknown:
        raise RequestError(f"Unknown parameters {unknown}; expected some of {[*ENGINE_PARAMETERS, 'format']}.")
    output_format = parameters.get("format", default_format)
    if output_format not in FORMATS:
        raise RequestError(f"`format` must be one of {FORMATS}, found {output_format!r}.")
    settings = {name: parameters[name] for name in ENGINE_PARAMETERS if parameters.get(name) is not None}
    if isinstance(settings.get("outputs"), str):
        settings["outputs"] = [settings["outputs"]]
    for name in ("window", "stride"):
        if name in settings and (type(settings[name]) is not int or settings[name] < 1):
            raise RequestError(f"`{name}` must be a positive integer, found {settings[name]!r}.")
    for name in ("bands", "wavelengths", "outputs", "expert_layers"):
        if name in settings and not isinstance(settings[name], list):
            raise RequestError(f"`{name}` must be a list, found {settings[name]!r}.")
    try:
        return PredictConfig(**settings, progress=False, overwrite=True), output_format
    except ValueError as error:
        raise RequestError(str(error)) from None


def _decode_base64(text, name: str, max_bytes: int) -> bytes:
    if not isinstance(text, str):
        raise RequestError(f"`{name}` must be a base64 string, found {type(text).__name__}.")
    if len(text) // 4 * 3 > max_bytes:
        raise RequestError(f"`{name}` decodes to about {len(text) // 4 * 3} bytes; this endpoint accepts at most "
                           f"{max_bytes} ({MAX_BYTES_ENV}).", status=413)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise RequestError(f"`{name}` is not valid base64: {str(error).rstrip('.')}.") from None


def _fetch(url, max_bytes: int, timeout: float) -> bytes:
    """The body at an http(s) URL, at most `max_bytes` long (other schemes would expose the server's own files)."""
    scheme = urllib.parse.urlsplit(url).scheme if isinstance(url, str) else None
    if scheme not in ("http", "https"):
        raise RequestError(f"`url` must be an http or https URL, found {url!r}.")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            declared = int(response.headers.get("Content-Length") or 0)
            body = response.read(max_bytes + 1) if declared <= max_bytes else b""
    except urllib.error.HTTPError as error:
        raise RequestError(f"Fetching {url} failed: HTTP {error.code} {error.reason}.") from None
    except (OSError, http.client.HTTPException, ValueError) as error:
        raise RequestError(f"Fetching {url} failed: {error}.") from None
    if declared > max_bytes or len(body) > max_bytes:
        raise RequestError(f"{url} holds {declared or 'more than ' + str(max_bytes)} bytes; this endpoint fetches at "
                           f"most {max_bytes} ({MAX_BYTES_ENV}).", status=413)
    return body


def _decode_array(value, max_bytes: int) -> np.ndarray:
    """(C, H, W) numbers of an `array` input: nested lists, or `{"data", "shape", "dtype"}` with `data` a flat list
    or the base64 of the raw little-endian bytes."""
    try:
        if isinstance(value, dict):
            missing = [key for key in ("data", "shape", "dtype") if key not in value]
            if missing:
                raise RequestError(f"An `array` object needs data, shape and dtype; {missing} missing.")
            dtype = np.dtype(value["dtype"]).newbyteorder("<")
            data = value["data"]
            flat = np.frombuffer(_decode_base64(data, "array.data", max_bytes), dtype) if isinstance(data, str) \
                else np.asarray(data, dtype=dtype)
            array = flat.reshape(value["shape"])
        else:
            array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise RequestError(f"`array` must hold numbers of one shape (C, H, W) or (H, W): {str(error).rstrip('.')}.") \
            from None
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.dtype.kind not in "uif" or 0 in array.shape:
        raise RequestError(f"`array` must hold numbers of shape (C, H, W) or (H, W), found shape {list(array.shape)} "
                           f"of {array.dtype}.")
    if array.nbytes > max_bytes:
        raise RequestError(f"`array` holds {array.nbytes} bytes; this endpoint accepts at most {max_bytes} "
                           f"({MAX_BYTES_ENV}).", status=413)
    return array.astype(array.dtype.newbyteorder("="), copy=False)


def _encode_output(path: str, output_format: str, scene_transform) -> dict:
    """One output raster for the response: its description and either its COG bytes (base64) or its values. Its
    transform is the scene's, scaled for token-grid maps (a raster without CRS has none of its own)."""
    with rasterio.open(path) as source:
        scale = int(source.tags().get("patch_size", 1))
        described = {"dtype": source.dtypes[0], "nodata": source.nodata, "shape": [source.count, *source.shape],
                     "transform": list(scene_transform @ Affine.scale(scale))[:6],
                     "band_descriptions": list(source.descriptions)}
        if output_format == "array":
            return {**described, "data": source.read().tolist()}
    return {**described, "geotiff_b64": base64.b64encode(Path(path).read_bytes()).decode("ascii")}


__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "RequestError", "SceneEndpoint"]
