"""The Space (examples/space/app.py) in a real browser: Debian's chromium, driven by playwright, uploads a 4-band
96 x 128 GeoTIFF to the app served locally; the class map it shows, mapped back to class indices through the legend it
shows, equals `predict_raster`'s classes. The screenshot is kept (its path is printed)."""

import importlib.util
import io
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_spectralmoe import SpectralMoEForSemanticSegmentation, SpectralMoEImageProcessor
from modeling_spectralmoe.inference.demo_scene import write_demo_scene
from modeling_spectralmoe.inference.predict import predict_raster
from modeling_spectralmoe.inference.scene_views import STRIDE, WINDOW

from .conftest import optional_import, require_optional, randomize_adapter, tiny_config


APP = Path(__file__).resolve().parents[1] / "examples" / "space" / "app.py"
CHROMIUM = "/usr/bin/chromium"
# Headless on a machine without GPU; no traffic but the page's own (playwright adds --headless and a fresh profile).
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 30_000


def require_browser():
    for module in ("rasterio", "gradio", "playwright.sync_api"):  # .ci/run installs gradio and playwright
        optional_import(module)
    require_optional(os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: apt-get install -y chromium")


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """A 96 x 128 demo scene (NIR, R, G, B, uint8, UTM) with a swath's no-data border."""
    path = tmp_path_factory.mktemp("space_scene") / "scene.tif"
    write_demo_scene(str(path), height=96, width=128)
    return path


def balance_classes(model, pixel_values: torch.Tensor, steps: int = 4) -> None:
    """Shifts the class predictor's biases until every class has the same mean score on these pixels: a random model
    otherwise gives one class everywhere, and the class map must show several."""
    bias = model.decode_head.class_predictor.bias
    with torch.no_grad():
        for _ in range(steps):
            mean_scores = model(pixel_values=pixel_values).logits[0].clamp(min=0).mean((1, 2))
            bias[:-1] -= torch.log(mean_scores / mean_scores.mean())  # the last logit is "no object"


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, tiny_encoders, scene):
    """A tiny random model with the demo scene's bands (NIR, R, G, B), its classes balanced on the scene, saved."""
    rasterio = optional_import("rasterio")
    folder = tmp_path_factory.mktemp("space_model")
    torch.manual_seed(0)
    model = SpectralMoEForSemanticSegmentation(tiny_config(*tiny_encoders, num_channels=4,
                                                           band_names=["NIR", "R", "G", "B"])).eval()
    model.load_pretrained_encoders()
    randomize_adapter(model)
    processor = SpectralMoEImageProcessor(image_mean=[110.0, 90.0, 95.0, 80.0], image_std=[40.0, 35.0, 30.0, 30.0],
                                          nodata_value=0)
    with rasterio.open(scene) as source:
        balance_classes(model, processor(source.read(), input_data_format="channels_first")["pixel_values"])
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def space_url(model_folder, tmp_path):
    """The Space app on a free local port of this process, without analytics."""
    require_browser()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        patch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
        spec = importlib.util.spec_from_file_location("space_app", APP)
        app_module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(app_module)
        app = app_module.build_app(str(model_folder))
        port = free_port()
        app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False)
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            app.close()


def shown_by_the_space(url: str, scene: Path, screenshot: Path) -> tuple[np.ndarray, list]:
    """Uploads the scene in chromium and picks another layer's expert map; returns the served class-map picture
    (H, W, 3) and the legend shown ([index, "#rrggbb"]), and saves a screenshot of the whole page."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url, timeout=TIMEOUT_MS)
            page.locator("#upload input[type=file]").set_input_files(str(scene))
            class_map = page.locator("#class-map img")
            class_map.wait_for(timeout=TIMEOUT_MS)
            experts = page.locator("#experts img")
            experts.wait_for(timeout=TIMEOUT_MS)
            first_layer = experts.get_attribute("src")
            page.locator("#expert-layer input").click()
            page.get_by_role("option", name="layer 3 depth gate").click()  # another layer's routing map
            page.wait_for_function("first => document.querySelector('#experts img')?.src !== first", arg=first_layer,
                                   timeout=TIMEOUT_MS)
            served = page.request.get(class_map.get_attribute("src")).body()
            legend = page.locator("#legend [data-class-index]").evaluate_all(
                "entries => entries.map(entry => [Number(entry.dataset.classIndex), entry.dataset.color])")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return np.array(Image.open(io.BytesIO(served)).convert("RGB")), legend


def test_the_space_shows_the_class_map_of_predict_raster(space_url, model_folder, scene, tmp_path):
    import rasterio

    reference = predict_raster(str(model_folder), None, scene, tmp_path / "reference", outputs=("classes",),
                               window=WINDOW, stride=STRIDE, progress=False, device="cpu")
    with rasterio.open(reference.paths["classes"]) as source:
        expected, nodata = source.read(1), source.nodata
    assert (expected == nodata).any() and set(np.unique(expected)) == {0, 1, 2, nodata}  # every class and no data

    screenshot = tmp_path / "space.png"
    picture, legend = shown_by_the_space(space_url, scene, screenshot)
    print(f"screenshot of the Space: {screenshot}")
    assert picture.shape == (96, 128, 3)
    colours = {tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5)): index for index, colour in legend}
    assert sorted(colours.values()) == [0, 1, 2]  # three classes, three distinct colours
    shown = np.array([colours.get(tuple(pixel), nodata) for pixel in picture.reshape(-1, 3)]).reshape(96, 128)
    assert np.array_equal(shown, expected)
    assert (picture[expected == nodata] == 0).all()  # no data is black, outside the legend
