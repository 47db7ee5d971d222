"""The Space's pictures (modeling_spectralmoe.inference.scene_views): every class's colour maps back to its index
through the legend, overlays blend, expert maps cover their tokens' pixels, the confidence ramp hits its stops."""

import numpy as np
import pytest

from modeling_spectralmoe.inference import scene_views
from modeling_spectralmoe.inference.outputs import default_palette


def synthetic_prediction(num_classes=5, height=40, width=60, seed=0) -> scene_views.ScenePrediction:
    rng = np.random.default_rng(seed)
    valid = np.ones((height, width), dtype=bool)
    valid[:, :7] = False
    return scene_views.ScenePrediction(
        image=rng.integers(0, 256, (height, width, 3)).astype(np.uint8), valid=valid,
        classes=np.where(valid, rng.integers(0, num_classes, (height, width)), 255).astype(np.uint8),
        confidence=np.where(valid, rng.integers(0, 101, (height, width)), 255).astype(np.uint8),
        class_names=[f"class <{index}>" for index in range(num_classes)],
        experts=rng.integers(0, 3, (2, 3, 4)).astype(np.uint8), expert_bands=["layer 1 spectral gate",
                                                                             "layer 1 depth gate"],
        num_experts=3, patch_size=16,
    )


def test_class_colours_map_back_to_indexes_through_the_legend():
    prediction = synthetic_prediction()
    picture = scene_views.class_map_image(prediction)
    legend = scene_views.legend(prediction.class_names)
    table = default_palette(5).values()  # the class map COG's colour table
    assert [colour for _, colour in legend] == ["#{:02x}{:02x}{:02x}".format(*colour[:3]) for colour in table]
    indexes = {tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5)): index for index, (_, colour) in enumerate(legend)}
    assert len(indexes) == 5
    shown = np.array([indexes.get(tuple(pixel), 255) for pixel in picture.reshape(-1, 3)]).reshape(40, 60)
    assert np.array_equal(shown, prediction.classes) and (picture[~prediction.valid] == 0).all()
    html = scene_views.legend_html(prediction.class_names)
    assert html.count("data-class-index=") == 5 and "class &lt;4&gt;" in html and legend[4][1] in html


def test_overlay_blends_the_class_colours_over_the_image():
    prediction = synthetic_prediction()
    overlay = scene_views.overlay_image(prediction, opacity=0.25)
    expected = 0.75 * prediction.image + 0.25 * scene_views.class_map_image(prediction)
    assert overlay.dtype == np.uint8 and np.abs(overlay - expected).max() <= 0.5


def test_expert_maps_cover_the_pixels_of_their_tokens():
    prediction = synthetic_prediction()
    picture = scene_views.expert_map_image(prediction, "layer 1 depth gate")
    colours = scene_views.palette(3)
    rows, columns = np.mgrid[:40, :60]
    expected = colours[prediction.experts[1][rows // 16, columns // 16]]
    expected[~prediction.valid] = 0
    assert np.array_equal(picture, expected)
    with pytest.raises(ValueError, match="layer 1 spectral gate"):
        scene_views.expert_map_image(prediction, "layer 2 spectral gate")


def test_confidence_ramp_and_natural_colour_stretch():
    prediction = synthetic_prediction()
    prediction.confidence[0, 10:13] = [0, 50, 100]
    picture = scene_views.confidence_image(prediction)
    assert [tuple(colour) for colour in picture[0, 10:13]] == [colour for _, colour in scene_views.CONFIDENCE_STOPS]
    bands = np.stack([np.arange(40 * 60).reshape(40, 60) * factor for factor in (1, 2, 3)])
    colours = scene_views.natural_colours(bands, prediction.valid)
    low, high = np.percentile(bands[0][prediction.valid], (2, 98))
    assert colours[..., 0][prediction.valid & (bands[0] <= low)].max() == 0
    assert colours[..., 0][prediction.valid & (bands[0] >= high)].min() == 255
    assert (colours[~prediction.valid] == 0).all()
