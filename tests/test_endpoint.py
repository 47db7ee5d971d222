"""The Inference Endpoint export: `spectralmoe-export-endpoint` writes a thin `handler.py` and pinned
`requirements.txt`; the handler, imported from the folder as the Endpoint toolkit does, answers base64 GeoTIFF, URL and
array requests with the classes of `predict_raster` on the same scene, and bad requests with an error payload."""

import ast
import base64
import functools
import http.server
import importlib.metadata
import importlib.util
import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_spectralmoe import SpectralMoEForSemanticSegmentation, SpectralMoEImageProcessor
from modeling_spectralmoe.inference import endpoint as endpoint_module
from modeling_spectralmoe.inference.export_endpoint import export_endpoint, main
from modeling_spectralmoe.inference.predict import predict_raster

from .conftest import optional_import, randomize_adapter, tiny_config


S2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
SETTINGS = {"window": 64, "stride": 48}


@pytest.fixture(scope="module")
def rasterio():
    return optional_import("rasterio")


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, tiny_encoders):
    """A tiny random 12-band (Sentinel-2 names) model, saved and exported for an Endpoint."""
    folder = tmp_path_factory.mktemp("endpoint_model")
    torch.manual_seed(0)
    model = SpectralMoEForSemanticSegmentation(tiny_config(*tiny_encoders, num_channels=12, band_names=S2_BANDS,
                                                           depth_rgb_bands=[3, 2, 1]))
    model.load_pretrained_encoders()
    randomize_adapter(model)
    model.save_pretrained(folder)
    rng = np.random.default_rng(0)
    SpectralMoEImageProcessor(image_mean=rng.uniform(900, 1100, 12).tolist(),
                              image_std=rng.uniform(300, 500, 12).tolist()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def handler(model_folder, rasterio):
    """`EndpointHandler` of the exported `handler.py`, imported by path as the Endpoint toolkit does."""
    export_endpoint(model_folder)
    spec = importlib.util.spec_from_file_location("handler", model_folder / "handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EndpointHandler(str(model_folder))


@pytest.fixture(scope="module")
def scene(tmp_path_factory, rasterio):
    """A 12-band uint16 UTM scene, 70 x 90, with a no-data border (0) on the left."""
    bands = np.random.default_rng(1).integers(1, 2000, (12, 70, 90)).astype("uint16")
    bands[:, :, :11] = 0
    path = tmp_path_factory.mktemp("endpoint_scene") / "scene.tif"
    profile = dict(driver="GTiff", height=70, width=90, count=12, dtype="uint16", nodata=0, crs="EPSG:32633",
                   transform=rasterio.transform.from_origin(400000.0, 5600000.0, 10.0, 10.0))
    with rasterio.open(path, "w", **profile) as target:
        target.write(bands)
    return path


@pytest.fixture(scope="module")
def reference(handler, scene, tmp_path_factory, rasterio):
    """`predict_raster`'s classes, confidence and grid on the scene."""
    endpoint = handler.endpoint
    result = predict_raster(endpoint.model, endpoint.processor, scene, tmp_path_factory.mktemp("reference"),
                            outputs=("classes", "confidence"), progress=False, **SETTINGS)
    with rasterio.open(result.paths["classes"]) as classes, rasterio.open(result.paths["confidence"]) as confidence:
        return {"classes": classes.read(), "confidence": confidence.read(), "crs": classes.crs,
                "transform": classes.transform}


def geotiff_request(path, **parameters):
    return {"inputs": {"geotiff_b64": base64.b64encode(path.read_bytes()).decode()},
            "parameters": {**SETTINGS, **parameters}}


def decode_cog(output: dict):
    from rasterio.io import MemoryFile

    with MemoryFile(base64.b64decode(output["geotiff_b64"])) as memory, memory.open() as source:
        return source.read(), source.crs, source.transform, source.tags(ns="IMAGE_STRUCTURE")["LAYOUT"]


def test_export_writes_a_thin_handler_and_the_pinned_package(model_folder, handler, tmp_path, capsys):
    tree = ast.parse((model_folder / "handler.py").read_text())
    imports = {f"{node.module}.{alias.name}" for node in tree.body if isinstance(node, ast.ImportFrom)
               for alias in node.names}
    assert imports == {"typing.Any", "modeling_spectralmoe.inference.endpoint.SceneEndpoint"}  # nothing of its own
    [handler_class] = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    assert handler_class.name == "EndpointHandler"
    assert [node.name for node in handler_class.body if isinstance(node, ast.FunctionDef)] == ["__init__", "__call__"]
    version = importlib.metadata.version("spectralmoe")
    assert (model_folder / "requirements.txt").read_text().splitlines() == [f"spectralmoe=={version}",
                                                                           "rasterio>=1.3"]
    assert export_endpoint(model_folder) == [model_folder / "handler.py", model_folder / "requirements.txt"]
    wheel = "spectralmoe @ https://example.org/spectralmoe-0.1.0-py3-none-any.whl"
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_endpoint(model_folder, package=wheel)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "config.json").write_text((model_folder / "config.json").read_text())
    main([str(copy), "--package", wheel])
    assert (copy / "requirements.txt").read_text().splitlines()[0] == wheel and "Wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no config.json"):
        main([str(tmp_path)])


def test_base64_geotiff_gives_the_cogs_of_predict_raster(handler, scene, reference):
    response = handler(geotiff_request(scene))
    classes, crs, transform, layout = decode_cog(response["outputs"]["classes"])
    assert np.array_equal(classes, reference["classes"]) and (classes == 255).any() and layout == "COG"
    assert crs == reference["crs"] and transform == reference["transform"]
    assert np.array_equal(decode_cog(response["outputs"]["confidence"])[0], reference["confidence"])
    assert response["crs"] == "EPSG:32633" and response["transform"] == list(reference["transform"])[:6]
    assert (response["height"], response["width"]) == (70, 90) and response["bands"]["names"] == S2_BANDS
    assert response["class_names"] == ["impervious", "building", "vegetation"] and response["warnings"] == []


def test_array_inputs_give_arrays(handler, scene, reference, rasterio):
    with rasterio.open(scene) as source:
        bands = source.read()
    nested = handler({"inputs": {"array": bands.tolist()}, "parameters": {**SETTINGS, "nodata": 0}})
    assert np.array_equal(np.array(nested["outputs"]["classes"]["data"]), reference["classes"])
    assert nested["crs"] is None and nested["warnings"] == []
    raw = {"data": base64.b64encode(bands.astype("<u2").tobytes()).decode(), "shape": [12, 70, 90], "dtype": "uint16"}
    packed = handler({"inputs": {"array": raw},
                      "parameters": {**SETTINGS, "nodata": 0, "outputs": ["classes", "experts"]}})
    assert packed["outputs"]["classes"]["data"] == nested["outputs"]["classes"]["data"]
    experts = packed["outputs"]["experts"]
    assert experts["shape"] == [8, 5, 6] and experts["transform"] == [16.0, 0.0, 0.0, 0.0, 16.0, 0.0]


@pytest.fixture
def file_server(scene):
    """An HTTP server on a free local port serving the scene's folder."""
    handler_class = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(scene.parent))
    handler_class.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    server.handle_error = lambda *args: None  # the refused download closes its connection early
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_inputs_are_fetched_within_the_byte_limit(handler, scene, reference, file_server, monkeypatch):
    response = handler({"inputs": {"url": f"{file_server}/{scene.name}"}, "parameters": SETTINGS})
    assert np.array_equal(decode_cog(response["outputs"]["classes"])[0], reference["classes"])
    missing = handler({"inputs": {"url": f"{file_server}/absent.tif"}})
    assert missing == {"error": f"Fetching {file_server}/absent.tif failed: HTTP 404 File not found.", "status": 400}
    monkeypatch.setattr(handler.endpoint, "max_bytes", scene.stat().st_size - 1)
    too_large = handler({"inputs": {"url": f"{file_server}/{scene.name}"}})
    assert too_large["status"] == 413 and f"holds {scene.stat().st_size} bytes" in too_large["error"]


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def encoded(content: bytes) -> dict:
    return {"inputs": {"geotiff_b64": base64.b64encode(content).decode()}}


BAD_REQUESTS = {
    "missing inputs": ({"parameters": SETTINGS}, 400, "`inputs` must be an object"),
    "two inputs": ({"inputs": {"url": "https://x", "array": [[1]]}}, 400, "exactly one of"),
    "bad base64": ({"inputs": {"geotiff_b64": "not base64!"}}, 400, "not valid base64"),
    "not a raster": (encoded(b"plain text, no image"), 400, "must hold a GeoTIFF; GDAL cannot read it"),
    "a PNG": (encoded(png_bytes()), 400, "must hold a GeoTIFF, found a PNG file"),
    "wrong band count": ({"inputs": {"array": np.ones((4, 16, 16), dtype=int).tolist()}}, 400,
                         "The model expects 12 bands"),
    "ragged array": ({"inputs": {"array": [[1, 2], [3]]}}, 400, "one shape"),
    "array object without dtype": ({"inputs": {"array": {"data": [1], "shape": [1, 1, 1]}}}, 400, "'dtype'] missing"),
    "unknown output": ({"inputs": {"array": [[1]]}, "parameters": {"outputs": ["labels"]}}, 400, "`outputs` must be"),
    "unknown parameter": ({"inputs": {"array": [[1]]}, "parameters": {"device": "cuda"}}, 400, "Unknown parameters"),
    "window not an integer": ({"inputs": {"array": [[1]]}, "parameters": {"window": "big"}}, 400, "positive integer"),
    "file URL": ({"inputs": {"url": "file:///etc/passwd"}}, 400, "http or https URL"),
    "too many pixels": ({"inputs": {"array": np.ones((12, 100, 101), dtype=np.uint8).tolist()}}, 413,
                        "100 x 101 = 10100 pixels; this endpoint serves at most 10000"),
}


@pytest.mark.parametrize("name", BAD_REQUESTS)
def test_bad_requests_get_an_error_payload(handler, name, monkeypatch):
    request, status, message = BAD_REQUESTS[name]
    monkeypatch.setattr(handler.endpoint, "max_pixels", 10_000)
    response = handler(request)
    assert set(response) == {"error", "status"} and response["status"] == status, response
    assert message in response["error"] and "Traceback" not in response["error"]


def test_a_too_large_geotiff_is_refused_before_its_pixels_are_read(handler, scene, monkeypatch):
    monkeypatch.setattr(handler.endpoint, "max_pixels", 70 * 90 - 1)
    monkeypatch.setattr(endpoint_module, "predict_raster", lambda *args, **kwargs: pytest.fail("predicted"))
    assert handler(geotiff_request(scene))["status"] == 413


def test_internal_errors_are_500_with_a_message(handler, scene, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(endpoint_module, "predict_raster", broken)
    assert handler(geotiff_request(scene)) == {"error": "Internal error (RuntimeError): disk full", "status": 500}
