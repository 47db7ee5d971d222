"""Whole-scene prediction on synthetic UTM GeoTIFFs with tiny random models: georeferencing, nodata, skipped windows,
COG, resume, band matching, expert maps, equality with the evaluation protocol, the CLI."""

import json
import warnings

import numpy as np
import pytest
import torch

from modeling_spectralmoe import SpectralMoEForSemanticSegmentation, SpectralMoEImageProcessor
from modeling_spectralmoe.evaluation.protocol import EvaluationConfig, predict_logits
from modeling_spectralmoe.inference import predict as predict_module
from modeling_spectralmoe.inference.predict import PredictConfig, expand_inputs, main, predict_raster

from .conftest import randomize_adapter, save_tiny_depth_model, save_tiny_dinov3, save_tiny_dofa, tiny_config


rasterio = pytest.importorskip("rasterio")
from rasterio.transform import Affine, from_origin  # noqa: E402


UTM = "EPSG:32633"
TRANSFORM = from_origin(400000.0, 5600000.0, 10.0, 10.0)
S2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
S2_WAVELENGTHS = [0.443, 0.49, 0.56, 0.665, 0.705, 0.74, 0.783, 0.842, 0.865, 0.945, 1.61, 2.19]


def write_scene(path, bands: np.ndarray, nodata=None, names=None, crs=UTM, transform=TRANSFORM, wavelengths=None):
    profile = dict(driver="GTiff", height=bands.shape[1], width=bands.shape[2], count=bands.shape[0],
                   dtype=bands.dtype.name, nodata=nodata)
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as target:
            target.write(bands)
            for index, name in enumerate(names or [], start=1):
                target.set_band_description(index, name)
            for index, wavelength in enumerate(wavelengths or [], start=1):
                target.update_tags(index, ns="IMAGERY", CENTRAL_WAVELENGTH_UM=str(wavelength))
    return str(path)


def random_bands(count: int, height: int, width: int, seed: int = 0, dtype="uint8") -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(1, 250, (count, height, width)).astype(dtype)


def with_nodata_border(bands: np.ndarray, value) -> np.ndarray:
    """No data on the top 40 rows, a ragged left edge, and the right 300 columns (whole windows without data)."""
    bands = bands.copy()
    bands[:, :40] = value
    for row in range(bands.shape[1]):
        bands[:, row, : row % 37] = value
    bands[:, :, -300:] = value
    return bands


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, tiny_encoders):
    """A tiny 3-band (B04, B03, B02) DINOv3 SpectralMoE with its processor, saved."""
    folder = tmp_path_factory.mktemp("predict_model")
    torch.manual_seed(0)
    model = SpectralMoEForSemanticSegmentation(tiny_config(*tiny_encoders, band_names=["B04", "B03", "B02"]))
    model.load_pretrained_encoders()
    randomize_adapter(model)
    model.save_pretrained(folder)
    SpectralMoEImageProcessor(image_mean=[120.0, 110.0, 100.0], image_std=[60.0, 55.0, 50.0]).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def loaded(model_folder):
    return predict_module.load_model(model_folder, device="cpu")


@pytest.fixture(scope="module")
def scene_3band(tmp_path_factory):
    """700 x 900 uint8 RGB-order scene (B04, B03, B02) with a nodata border (0)."""
    bands = with_nodata_border(random_bands(3, 700, 900), 0)
    return write_scene(tmp_path_factory.mktemp("scenes") / "rgb.tif", bands, nodata=0, names=["B04", "B03", "B02"])


@pytest.fixture(scope="module")
def full_prediction(loaded, scene_3band, tmp_path_factory):
    output = tmp_path_factory.mktemp("full")
    result = predict_raster(*loaded, scene_3band, output, window=128, stride=80, batch_size=4, progress=False,
                            outputs=("classes", "confidence", "probabilities", "experts"))
    return result


def read(path):
    with rasterio.open(path) as source:
        return source.read(), source.profile, source.tags(), source


def test_outputs_keep_the_input_grid_and_nodata_and_are_cogs(full_prediction, scene_3band):
    with rasterio.open(scene_3band) as source:
        valid = source.read_masks(1) > 0
        crs, transform, shape = source.crs, source.transform, source.shape
    for kind in ("classes", "confidence", "probabilities"):
        with rasterio.open(full_prediction.paths[kind]) as output:
            assert (output.crs, output.transform, output.shape) == (crs, transform, shape)
            assert output.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and output.overviews(1) == [2]
            values = output.read()
            assert (values[:, ~valid] == output.nodata).all() and (values[:, valid] != output.nodata).all()
    classes, profile, tags, _ = read(full_prediction.paths["classes"])
    assert profile["dtype"] == "uint8" and json.loads(tags["class_names"]) == ["impervious", "building", "vegetation"]
    assert classes[0][valid].max() < 3
    with rasterio.open(full_prediction.paths["classes"]) as output:
        assert output.colormap(1)[1][3] == 255
    confidence = read(full_prediction.paths["confidence"])[0][0][valid]
    assert confidence.min() >= 33 and confidence.max() <= 100  # the top class holds at least 1/3 of three classes
    sidecar = json.loads(open(full_prediction.paths["sidecar"]).read())
    assert sidecar["complete"] and sidecar["windows"] == 9 * 11 == full_prediction.windows
    # windows wholly in the right 300 no-data columns: the grid columns starting at 640, 720 and 784 (flush)
    assert sidecar["skipped_windows"] == full_prediction.skipped_windows == 9 * 3
    assert sidecar["bands"]["names"] == ["B04", "B03", "B02"]


def test_expert_maps_lie_on_the_token_grid(full_prediction, scene_3band):
    experts, profile, _, _ = read(full_prediction.paths["experts"])
    assert profile["transform"] == TRANSFORM @ Affine.scale(16)
    assert experts.shape == (8, 44, 57)  # 4 adapted layers x (spectral, depth); ceil(700 / 16) x ceil(900 / 16)
    assert set(np.unique(experts)) <= {0, 1, 2, 255}


def test_one_window_scene_experts_equal_the_models_top1(loaded, tmp_path):
    model, processor = loaded
    bands = random_bands(3, 120, 90, seed=3)
    path = write_scene(tmp_path / "small.tif", bands, names=["B04", "B03", "B02"])
    result = predict_raster(model, processor, path, tmp_path / "out", outputs=("classes", "experts"), progress=False,
                            stride=336,
                            expert_layers=[1, 3])
    experts, profile, _, _ = read(result.paths["experts"])
    assert profile["transform"] == TRANSFORM @ Affine.scale(16)
    with torch.no_grad():
        output = model(**processor(bands, input_data_format="channels_first"), output_router_probs=True)
    expected = [gates[0].argmax(-1).reshape(8, 6) for layer in (1, 3)
                for gates in (output.visual_router_probs[layer], output.depth_router_probs[layer])]
    assert np.array_equal(experts, torch.stack(expected).numpy())
    classes = read(result.paths["classes"])[0][0]
    assert np.array_equal(classes, output.logits[0, :, :120, :90].argmax(0).numpy())


def test_experts_need_windows_on_the_patch_grid(loaded, scene_3band, tmp_path):
    with pytest.raises(ValueError, match="use 336"):
        predict_raster(*loaded, scene_3band, tmp_path, stride=341, outputs=("experts",), progress=False)
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        predict_raster(*loaded, scene_3band, tmp_path, window=500, progress=False)


def test_mean_blend_equals_the_evaluation_protocol_through_strips_and_column_blocks(loaded, tmp_path):
    """Mean-blended windows, read by DataLoader workers and streamed in strips and column blocks, give the classes and confidence of evaluation's
    `predict_logits` on the whole padded image (the array-level engine is checked at 512/341 against mmseg's loop in
    test_windows.py)."""
    model, processor = loaded
    bands = random_bands(3, 200, 300, seed=5)
    path = write_scene(tmp_path / "scene.tif", bands, names=["B04", "B03", "B02"])
    result = predict_raster(model, processor, path, tmp_path / "out", blend="mean", window=128, stride=80,
                            batch_size=1, column_block_width=220, num_workers=1, cog=False, progress=False)
    scores = predict_logits(model, processor(bands, input_data_format="channels_first")["pixel_values"],
                            EvaluationConfig(mode="slide", crop=128, stride=80, blend="mean"))[0, :, :200, :300]
    assert np.array_equal(read(result.paths["classes"])[0][0], scores.argmax(0).numpy())
    share = scores.max(0).values / scores.sum(0)
    assert np.array_equal(read(result.paths["confidence"])[0][0], np.rint(share.numpy() * 100).astype(np.uint8))


def test_twelve_float_bands_with_per_band_nodata_are_matched_by_name(loaded, tmp_path):
    model, processor = loaded
    rgb = random_bands(3, 100, 130, seed=7).astype("float32")
    bands = np.random.default_rng(8).uniform(0, 250, (12, 100, 130)).astype("float32")
    bands[[3, 2, 1]] = rgb
    bands[:, :, :20] = -99999.0
    path = write_scene(tmp_path / "s2.tif", bands, nodata=-99999.0, names=S2_BANDS)
    result = predict_raster(model, processor, path, tmp_path / "out", window=64, stride=48, progress=False)
    sidecar = json.loads(open(result.paths["sidecar"]).read())
    assert sidecar["bands"]["indexes"] == [4, 3, 2]
    rgb[:, :, :20] = 0
    reference = predict_raster(model, processor, write_scene(tmp_path / "rgb.tif", rgb, nodata=0,
                                                             names=["B04", "B03", "B02"]),
                               tmp_path / "out_rgb", window=64, stride=48, progress=False)
    assert np.array_equal(read(result.paths["classes"])[0], read(reference.paths["classes"])[0])
    assert (read(result.paths["classes"])[0][0, :, :20] == 255).all()


class _CountingModel(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, 0
        self.config, self.visual_encoder, self.adapter = model.config, model.visual_encoder, model.adapter

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.model(*args, **kwargs)


def test_band_mismatches_fail_before_any_window_runs(loaded, tmp_path):
    model, processor = loaded
    counting = _CountingModel(model)
    renamed = write_scene(tmp_path / "renamed.tif", random_bands(3, 64, 64), names=["R", "G", "B"])
    with pytest.raises(ValueError, match=r"Expected bands \['B04', 'B03', 'B02'\], found \['R', 'G', 'B'\]"):
        predict_raster(counting, processor, renamed, tmp_path / "out", progress=False)
    four = write_scene(tmp_path / "four.tif", random_bands(4, 64, 64))
    with pytest.raises(ValueError, match=r"expects 3 bands \['B04', 'B03', 'B02'\], found 4 bands \[1, 2, 3, 4\]"):
        predict_raster(counting, processor, four, tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match=r"Expected bands \['B08'\], found \['R', 'G', 'B'\]"):
        predict_raster(counting, processor, renamed, tmp_path / "out", bands=["B08"], progress=False)
    assert counting.calls == 0 and not list((tmp_path / "out").glob("*.tif*"))


def test_resume_skips_complete_scenes_and_redoes_partial_ones(loaded, tmp_path):
    model, processor = loaded
    path = write_scene(tmp_path / "scene.tif", random_bands(3, 80, 96), names=["B04", "B03", "B02"])
    settings = dict(window=64, stride=48, progress=False)
    first = predict_raster(model, processor, path, tmp_path / "out", **settings)
    classes = open(first.paths["classes"], "rb").read()
    assert predict_raster(model, processor, path, tmp_path / "out", **settings).resumed
    with pytest.raises(ValueError, match="other settings"):
        predict_raster(model, processor, path, tmp_path / "out", **{**settings, "blend": "mean"})
    # an interrupted run: outputs left as .partial, sidecar not (re)written as complete
    sidecar = json.loads(open(first.paths["sidecar"]).read())
    open(first.paths["sidecar"], "w").write(json.dumps({**sidecar, "complete": False}))
    (tmp_path / "out" / "scene_confidence.tif.partial").write_bytes(b"half")
    again = predict_raster(model, processor, path, tmp_path / "out", **settings)
    assert not again.resumed and open(again.paths["classes"], "rb").read() == classes
    assert not list((tmp_path / "out").glob("*.partial"))


def test_class_maps_beyond_254_classes_are_uint16(tiny_encoders, tmp_path):
    labels = {index: f"class {index}" for index in range(300)}
    model = SpectralMoEForSemanticSegmentation(tiny_config(*tiny_encoders, id2label=labels))
    path = write_scene(tmp_path / "scene.tif", with_nodata_border(random_bands(3, 64, 340), 0), nodata=0)
    result = predict_raster(model, SpectralMoEImageProcessor(), path, tmp_path / "out", window=64, stride=64,
                            progress=False, cog=False)
    classes, profile, _, _ = read(result.paths["classes"])
    assert profile["dtype"] == "uint16" and profile["nodata"] == 65535
    assert classes[0, 0, 0] == 65535 and classes[0, -1, 30] < 300


def test_files_without_crs_give_outputs_without_crs_and_one_warning(loaded, tmp_path):
    path = write_scene(tmp_path / "plain.tif", random_bands(3, 50, 60), names=["B04", "B03", "B02"], crs=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = predict_raster(*loaded, path, tmp_path / "out", window=48, stride=32, progress=False)
    assert [str(w.message) for w in caught] == [f"{path} has no CRS: its outputs will have none either."]
    with rasterio.open(result.paths["classes"]) as output:
        assert output.crs is None and output.shape == (50, 60)


def test_another_sensor_through_a_wavelength_conditioned_model(tmp_path):
    """A DOFA model trained on 4 bands predicts a 5-band file whose wavelengths come from the file and whose
    statistics come from a band file."""
    visual, depth = save_tiny_dofa(tmp_path / "dofa"), save_tiny_depth_model(tmp_path / "depth")
    model = SpectralMoEForSemanticSegmentation(tiny_config(visual, depth, num_channels=4,
                                                           wavelengths=[0.83, 0.665, 0.56, 0.49]))
    processor = SpectralMoEImageProcessor(image_mean=[100.0] * 4, image_std=[50.0] * 4)
    bands = random_bands(5, 64, 80)
    path = write_scene(tmp_path / "five.tif", bands, names=S2_BANDS[1:6], wavelengths=S2_WAVELENGTHS[1:6])
    with pytest.raises(ValueError, match="band file"):
        predict_raster(model, processor, path, tmp_path / "out", window=64, stride=48, progress=False)
    band_file = tmp_path / "bands.json"
    band_file.write_text(json.dumps({"band_names": S2_BANDS[1:6], "mean": [90.0] * 5, "std": [40.0] * 5}))
    result = predict_raster(model, processor, path, tmp_path / "out", window=64, stride=48, progress=False,
                            band_file=str(band_file))
    sidecar = json.loads(open(result.paths["sidecar"]).read())
    assert sidecar["bands"]["wavelengths"] == S2_WAVELENGTHS[1:6] and sidecar["statistics"]["mean"] == [90.0] * 5


def test_cli_predicts_a_folder_and_prints_one_json_line_per_scene(model_folder, tmp_path, capsys):
    for index in range(2):
        write_scene(tmp_path / "in" / f"scene{index}.tif" if (tmp_path / "in").mkdir(exist_ok=True) is None else "",
                    random_bands(3, 40, 50, seed=index), names=["B04", "B03", "B02"])
    main([model_folder, str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--window", "32", "--stride", "32",
          "--quiet", "--outputs", "classes", "--no-cog"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["input_path"] for line in lines] == expand_inputs(tmp_path / "in")
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "scene0.json", "scene0_classes.tif", "scene1.json", "scene1_classes.tif"]
    with pytest.raises(ValueError, match="outputs"):
        PredictConfig(outputs=("labels",))
