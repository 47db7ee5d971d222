"""SpectralMoEImageProcessor: normalisation in raw units, band layouts, no-data, padding/resizing, post-processing and
saving/loading (SPEC §3 Normalisation)."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor

from modeling_spectralmoe import SpectralMoEImageProcessor


FOUR_BAND_STATS = dict(image_mean=[110.7, 85.4, 88.6, 82.4], image_std=[72.4, 65.6, 63.9, 63.0])  # FBP, NIR-R-G-B


def random_image(shape, dtype, seed=0):
    high = {np.uint8: 255, np.uint16: 10000, np.int16: 10000, np.float32: 1.0}[dtype]
    low = -high if dtype == np.int16 else 0
    rng = np.random.default_rng(seed)
    return (rng.random(shape) * (high - low) + low).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
def test_per_band_normalisation_equals_hand_computation(dtype):
    rng = np.random.default_rng(1)
    mean, std = rng.uniform(0, 3000, 32), rng.uniform(500, 2000, 32)
    image = random_image((32, 20, 24), dtype)
    processor = SpectralMoEImageProcessor(image_mean=mean.tolist(), image_std=std.tolist())

    inputs = processor(image, input_data_format="channels_first")

    expected = (image.astype(np.float64) - mean[:, None, None]) / std[:, None, None]
    assert inputs["pixel_values"].dtype == torch.float32
    torch.testing.assert_close(inputs["pixel_values"][0, :, :20, :24], torch.from_numpy(expected).float())


def test_pads_bottom_right_to_a_multiple_of_the_divisor():
    processor = SpectralMoEImageProcessor(**FOUR_BAND_STATS)
    images = [random_image((4, 17, 33), np.uint8), random_image((4, 40, 16), np.uint8, seed=1)]
    maps = [np.ones((17, 33), np.uint8), np.full((40, 16), 2, np.uint8)]

    inputs = processor(images, segmentation_maps=maps)

    assert inputs["pixel_values"].shape == (2, 4, 48, 48)
    assert inputs["labels"].shape == inputs["pixel_mask"].shape == (2, 48, 48)
    assert inputs["labels"].dtype == inputs["pixel_mask"].dtype == torch.int64
    # The image keeps the top-left corner; padding is 0 in pixel values and mask, 255 in labels.
    assert inputs["pixel_mask"][0, :17, :33].all() and inputs["pixel_mask"][0].sum() == 17 * 33
    assert (inputs["pixel_values"][0, :, 17:] == 0).all() and (inputs["pixel_values"][0, :, :, 33:] == 0).all()
    assert (inputs["labels"][0, :17, :33] == 1).all() and (inputs["labels"][0, 17:] == 255).all()
    assert (inputs["labels"][1, :40, :16] == 2).all() and (inputs["labels"][1, :, 16:] == 255).all()


def test_resizes_to_size_before_padding():
    processor = SpectralMoEImageProcessor(**FOUR_BAND_STATS, do_resize=True, size={"height": 40, "width": 24})
    inputs = processor(random_image((4, 50, 70), np.uint8), segmentation_maps=np.zeros((50, 70), np.uint8))
    assert inputs["pixel_values"].shape == (1, 4, 48, 32)
    assert (inputs["labels"][0, :40, :24] == 0).all() and (inputs["labels"][0, 40:] == 255).all()


@pytest.mark.parametrize("layout", ["channels_last", "torch_channels_first", "torch_channels_last", "batched"])
def test_band_layouts_give_the_same_tensor(layout):
    processor = SpectralMoEImageProcessor(**FOUR_BAND_STATS)
    image = random_image((4, 20, 24), np.uint16)
    reference = processor(image)["pixel_values"]  # channels-first inferred: only axis 0 has 4 entries
    other = {
        "channels_last": image.transpose(1, 2, 0),
        "torch_channels_first": torch.from_numpy(image.astype(np.int32)),
        "torch_channels_last": torch.from_numpy(image.transpose(1, 2, 0).astype(np.int32)),
        "batched": image[None],
    }[layout]
    torch.testing.assert_close(processor(other)["pixel_values"], reference, rtol=0, atol=0)


def test_pil_rgb_image_matches_numpy():
    processor = SpectralMoEImageProcessor()  # 3 bands, ImageNet statistics in 8-bit units
    array = random_image((20, 24, 3), np.uint8)
    pil_values = processor(Image.fromarray(array), return_tensors="np")["pixel_values"]
    numpy_values = processor(array, return_tensors="np")["pixel_values"]
    assert isinstance(pil_values, np.ndarray) and pil_values.shape == (1, 3, 32, 32)
    np.testing.assert_array_equal(pil_values, numpy_values)


def test_ambiguous_layout_and_wrong_band_count_raise():
    processor = SpectralMoEImageProcessor(**FOUR_BAND_STATS)
    with pytest.raises(ValueError, match="input_data_format"):
        processor(np.zeros((4, 8, 4), np.uint8))
    with pytest.raises(ValueError, match="has 5 bands but the processor expects 4"):
        processor(np.zeros((5, 8, 8), np.uint8), input_data_format="channels_first")
    with pytest.raises(ValueError, match="has 3 values and `image_std` 4, but 4 bands"):
        SpectralMoEImageProcessor(image_mean=[0.0, 0.0, 0.0], image_std=[1.0] * 4)


@pytest.mark.parametrize("nodata_value", [0, float("nan")])
def test_nodata_pixel_is_ignored(nodata_value):
    processor = SpectralMoEImageProcessor(**FOUR_BAND_STATS, nodata_value=nodata_value)
    image = random_image((4, 16, 16), np.float32) + 1
    image[:, 3, 5] = nodata_value  # no data in every band
    image[1, 7, 7] = 0  # a single dark band is data

    inputs = processor(image, segmentation_maps=np.ones((16, 16), np.uint8))

    assert inputs["labels"][0, 3, 5] == 255 and inputs["pixel_mask"][0, 3, 5] == 0
    assert (inputs["pixel_values"][0, :, 3, 5] == 0).all()
    assert (inputs["labels"][0] != 255).sum() == 255 and inputs["pixel_mask"][0].sum() == 255
    assert inputs["pixel_values"][0, 1, 7, 7] == pytest.approx(-85.4 / 65.6)


def test_nan_input_raises_with_count_and_bands():
    processor = SpectralMoEImageProcessor(**FOUR_BAND_STATS)
    image = random_image((4, 16, 16), np.float32)
    image[1, 0, 0] = np.nan
    image[3, 2, 2] = np.inf
    with pytest.raises(ValueError, match=r"2 NaN or infinite values \(band 1: 1, band 3: 1\).*nodata_value"):
        processor(image)


def test_post_processed_maps_have_target_sizes():
    processor = SpectralMoEImageProcessor()
    outputs = SimpleNamespace(logits=torch.randn(2, 5, 32, 48))
    maps = processor.post_process_semantic_segmentation(outputs, target_sizes=[(20, 30), (64, 40)])
    assert [tuple(m.shape) for m in maps] == [(20, 30), (64, 40)] and maps[0].dtype == torch.int64
    maps = processor.post_process_semantic_segmentation(outputs)
    assert [tuple(m.shape) for m in maps] == [(32, 48)] * 2
    torch.testing.assert_close(maps[1], outputs.logits[1].argmax(0))


def test_post_processing_drops_the_padding():
    processor = SpectralMoEImageProcessor()
    pixel_mask = processor(random_image((20, 20, 3), np.uint8))["pixel_mask"]  # padded to 32 x 32
    # Class 1 scores high only on the padding: it must not leak into the (20, 20) map.
    logits = torch.stack([pixel_mask.float(), 1 - pixel_mask.float()], dim=1) * 10
    (label_map,) = processor.post_process_semantic_segmentation(SimpleNamespace(logits=logits), [(20, 20)])
    assert (label_map == 0).all()


def test_save_load_round_trip(tmp_path):
    processor = SpectralMoEImageProcessor(
        **FOUR_BAND_STATS, size_divisor=32, nodata_value=0, do_resize=True, size={"height": 64, "width": 96}
    )
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "preprocessor_config.json").is_file()

    for loaded in (SpectralMoEImageProcessor.from_pretrained(tmp_path), AutoImageProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is SpectralMoEImageProcessor
        assert loaded.to_dict() == processor.to_dict()
    assert SpectralMoEImageProcessor.from_pretrained(tmp_path, size_divisor=16).size_divisor == 16


def test_register_for_auto_class_loads_as_remote_code(tmp_path, monkeypatch):
    monkeypatch.setattr(SpectralMoEImageProcessor, "_auto_class", None)  # undone after the test
    SpectralMoEImageProcessor.register_for_auto_class("AutoImageProcessor")
    SpectralMoEImageProcessor(**FOUR_BAND_STATS).save_pretrained(tmp_path)

    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["auto_map"] == {"AutoImageProcessor": "image_processing_spectralmoe.SpectralMoEImageProcessor"}
    assert (tmp_path / "image_processing_spectralmoe.py").is_file()
    assert (tmp_path / "configuration_spectralmoe.py").is_file()
    # A fresh interpreter that never imported the package must load the copied flat files.
    script = (
        "import sys; from transformers import AutoImageProcessor; "
        "p = AutoImageProcessor.from_pretrained(sys.argv[1], trust_remote_code=True); "
        "assert 'modeling_spectralmoe' not in sys.modules; print(type(p).__module__, p.num_channels)"
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    module, num_channels = result.stdout.split()
    assert module.startswith("transformers_modules.") and num_channels == "4"
