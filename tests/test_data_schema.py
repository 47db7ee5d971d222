"""The dataset schema (modeling_spectralmoe.data.schema) and the protocol steps of the builders' shared module
(modeling_spectralmoe.data.builders.common) tested on in-memory arrays: streaming statistics, metadata, band roles,
loading, tiling, label remapping."""

import json

import datasets
import numpy as np
import pytest

from modeling_spectralmoe.data.builders import common
from modeling_spectralmoe.data.schema import (
    IGNORE_INDEX,
    METADATA_FILE,
    BandStatistics,
    SpectralMetadata,
    load_spectral_dataset,
    segmentation_features,
)


# ---- streaming statistics --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16", "float32"])
def test_streaming_statistics_equal_numpy_and_skip_nodata(dtype):
    rng = np.random.default_rng(0)
    tiles = [(rng.normal(300, 80, (3, 37, 41)) * (1 if dtype != "uint8" else 0.3)).astype(dtype) for _ in range(5)]
    for tile in tiles:
        tile[:, :5] = 0  # no-data rows: 0 in all bands
        tile[0, 6, :] = 0  # a legitimate 0 in one band only: kept
    statistics = BandStatistics(3, nodata=0)
    for tile in tiles:  # uneven batches: whole tiles, then halves
        for part in np.array_split(tile, 2, axis=1):
            statistics.update(part)
    pixels = np.concatenate([t.reshape(3, -1) for t in tiles], axis=1).astype(np.float64)
    pixels = pixels[:, ~(pixels == 0).all(axis=0)]
    assert statistics.count == pixels.shape[1] == 5 * 32 * 41
    np.testing.assert_allclose(statistics.mean, pixels.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(statistics.std, pixels.std(axis=1), rtol=1e-10)


def test_streaming_statistics_valid_mask_merge_and_nan_nodata():
    rng = np.random.default_rng(1)
    image = rng.normal(0.3, 0.1, (2, 20, 30)).astype(np.float32)
    image[:, 0] = np.nan
    valid = np.ones((20, 30), dtype=bool)
    valid[:, -4:] = False  # padding
    first, second = BandStatistics(2, nodata=float("nan")), BandStatistics(2, nodata=float("nan"))
    first.update(image[:, :10], valid[:10])
    second.update(image[:, 10:], valid[10:])
    restored = BandStatistics.from_dict(json.loads(json.dumps(second.to_dict())))
    merged = first.merge(restored)
    expected = image[:, 1:, :-4].reshape(2, -1).astype(np.float64)
    np.testing.assert_allclose(merged.mean, expected.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(merged.std, expected.std(axis=1), rtol=1e-10)
    with pytest.raises(ValueError, match="expected 2 bands, found 3"):
        merged.update(np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="no valid pixel"):
        BandStatistics(1, nodata=0).mean


# ---- metadata and loading --------------------------------------------------------------------------------------


def _metadata(**overrides) -> SpectralMetadata:
    values = dict(name="tiny", band_names=["NIR", "R", "G", "B"], mean=[1, 2, 3, 4], std=[1, 1, 1, 1],
                  id2label={0: "water", 1: "land"}, wavelengths=[0.83, 0.665, 0.56, 0.49],
                  target_splits=["target_b"], nodata=0, domain_bands={"b": {"band_names": ["R", "G", "B", "NIR"]}})
    values.update(overrides)
    return SpectralMetadata(**values)


def test_metadata_round_trip_and_checks(tmp_path):
    metadata = _metadata()
    written = metadata.save(tmp_path)
    assert written.endswith(METADATA_FILE)
    loaded = SpectralMetadata.load(tmp_path)
    assert loaded == metadata and loaded.id2label == {0: "water", 1: "land"} and loaded.num_labels == 2
    assert loaded.bands_of("b") == (["R", "G", "B", "NIR"], [0.83, 0.665, 0.56, 0.49])
    assert loaded.bands_of("a") == (["NIR", "R", "G", "B"], [0.83, 0.665, 0.56, 0.49])
    with pytest.raises(ValueError, match="`mean` has 3 values for 4 bands"):
        _metadata(mean=[1, 2, 3])
    with pytest.raises(ValueError, match="`wavelengths` has 2 values"):
        _metadata(wavelengths=[0.5, 0.6])
    with pytest.raises(ValueError, match="keys must be 0..K-1"):
        _metadata(id2label={1: "a"})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=METADATA_FILE):
        SpectralMetadata.load(empty)


def _tiny_split(num_rows: int, dtype: str, domain: str) -> datasets.Dataset:
    rng = np.random.default_rng(0)
    return datasets.Dataset.from_dict(
        {"pixel_values": rng.integers(0, 4000, (num_rows, 4, 8, 8)).astype(dtype),
         "label": rng.integers(0, 2, (num_rows, 8, 8)).astype("uint8"),
         "domain": [domain] * num_rows, "image_id": [f"{domain}_{i}" for i in range(num_rows)]},
        features=segmentation_features(4, 8, 8, dtype))


@pytest.mark.parametrize("band_names, expected", [
    (["NIR", "R", "G", "B"], [1, 2, 3]),
    (["blue", "Green", "RED", "nir"], [2, 1, 0]),
    (["R", "G", "B", "NIR", "elevation"], [0, 1, 2]),
    (["NIR", "R", "G"], None),  # Vaihingen: no blue band, so no RGB role
    ([f"B{index:02d}" for index in range(1, 33)], None),  # hyperspectral band numbers
])
def test_rgb_band_roles_come_from_the_band_names(band_names, expected):
    bands = len(band_names)
    metadata = SpectralMetadata(name="x", band_names=band_names, mean=[0.0] * bands, std=[1.0] * bands, id2label={0: "a"})
    assert metadata.rgb_band_indices() == expected


@pytest.mark.parametrize("layout", ["save_to_disk", "hub_parquet"])
def test_load_spectral_dataset_keeps_native_dtypes(tmp_path, layout):
    dataset = datasets.DatasetDict({"train": _tiny_split(3, "uint16", "a"), "target_b": _tiny_split(2, "uint16", "b")})
    folder = tmp_path / "dataset"
    if layout == "save_to_disk":
        dataset.save_to_disk(str(folder))
    else:  # the file naming of push_to_hub: data/<split>-00000-of-00001.parquet
        for split, part in dataset.items():
            (folder / "data").mkdir(parents=True, exist_ok=True)
            part.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    _metadata().save(folder)
    loaded, metadata = load_spectral_dataset(folder, cache_dir=str(tmp_path / "cache"))
    assert list(loaded) == ["train", "target_b"] and metadata.name == "tiny"
    example = loaded["train"][1]
    assert example["pixel_values"].dtype == np.uint16 and example["pixel_values"].shape == (4, 8, 8)
    assert example["label"].dtype == np.uint8 and example["domain"] == "a"
    np.testing.assert_array_equal(example["pixel_values"], np.asarray(dataset["train"][1]["pixel_values"]))
    assert loaded["target_b"][:2]["pixel_values"].shape == (2, 4, 8, 8)


# ---- protocol steps --------------------------------------------------------------------------------------------


def test_gf2_scene_gives_210_tiles_without_padding():
    image = np.full((1, 6908, 7300), 99, dtype=np.uint8)  # 99 = padding
    image[:, 54:6854, 60:7260] = 7
    image[0, 54, 60], image[0, 6853, 7259] = 1, 2  # first and last kept pixels
    label = np.full((6908, 7300), 200, dtype=np.uint8)
    label[54:6854, 60:7260] = 3
    image, label = common.remove_gf2_padding(image, label, "scene")
    assert image.shape == (1, 6800, 7200) and not (image == 99).any()
    tiles = list(common.padded_tiles(image, label, 512, "scene", "gf2"))
    assert len(tiles) == 210 == 14 * 15
    assert all(t.pixel_values.shape == (1, 512, 512) and t.label.shape == (512, 512) for t in tiles)
    assert tiles[0].image_id == "scene_y0_x0" and tiles[0].pixel_values[0, 0, 0] == 1 and tiles[0].valid is None
    last = tiles[-1]  # rows 6656..7167, columns 7168..7679: 144 x 32 pixels of scene, the rest padded
    assert last.image_id == "scene_y6656_x7168" and last.pixel_values[0, 143, 31] == 2
    assert (last.label[144:] == IGNORE_INDEX).all() and (last.label[:, 32:] == IGNORE_INDEX).all()
    assert (last.pixel_values[:, 144:] == 0).all() and (last.label[:144, :32] == 3).all()
    assert last.valid.sum() == 144 * 32
    assert sum(int((t.label == 3).sum()) for t in tiles) == 6800 * 7200
    with pytest.raises(ValueError, match="expected a GF-2 scene of 6908 rows x 7300 columns, found 6900 x 7300"):
        common.remove_gf2_padding(np.zeros((1, 6900, 7300)), np.zeros((6900, 7300)), "bad")


def test_sliding_and_labelled_windows():
    assert len(common.sliding_grid(6000, 6000, 512, 256)) == 23 * 23  # a Potsdam tile
    assert common.sliding_grid(700, 600, 512, 256) == [(0, 0), (0, 88), (188, 0), (188, 88)]
    label = np.full((3000, 2000), IGNORE_INDEX, dtype=np.uint8)
    label[1000:1100, 500:700] = 1  # labelled block: centre (1050, 600)
    assert common.labelled_window(label, 1024) == (1050 - 512, 600 - 512)
    label[:] = IGNORE_INDEX
    label[0:10, 1990:2000] = 1  # at a corner: the window is shifted inside
    assert common.labelled_window(label, 1024) == (0, 2000 - 1024)


def test_label_remapping_and_palette_refuse_unknown_values():
    mapping = common.shifted_codes(12, ignored=range(13, 20))
    codes = np.arange(20, dtype=np.uint8).reshape(4, 5)
    out = common.remap_index_label(codes, mapping, "msk")
    assert out.dtype == np.uint8
    assert out.ravel().tolist() == [255] + list(range(12)) + [255] * 7
    with pytest.raises(ValueError, match=r"found unexpected codes \[20\]"):
        common.remap_index_label(np.array([[1, 20]], dtype=np.uint8), mapping, "msk")
    palette = {(255, 255, 255): 0, (0, 0, 255): 1, (0, 0, 0): 255}
    colour = np.array([[[255, 0, 0]], [[255, 0, 0]], [[255, 255, 0]]], dtype=np.uint8)  # (3, 1, 3)
    assert common.decode_palette(colour, palette, "lbl").tolist() == [[0, 1, 255]]
    colour[:, 0, 1] = (1, 2, 3)
    with pytest.raises(ValueError, match=r"1 pixels of other colours, e.g. \[\(1, 2, 3\)\]"):
        common.decode_palette(colour, palette, "lbl")
    assert common.decode_palette(colour, palette, "lbl", unknown_as_ignore=True).tolist() == [[0, 255, 255]]


def test_split_file_assignment():
    keys = [f"s{i}" for i in range(1, 13)]
    spec = {"domains": {"north": ["s1", "s2"]}, "validation": ["north"], "target": [{"every_nth": 4, "offset": 3}],
            "train": ["*"]}
    assignment = common.assign_splits(keys, spec)
    assert [k for k in keys if assignment[k] == "validation"] == ["s1", "s2"]
    assert [k for k in keys if assignment[k] == "target"] == ["s6", "s10"]  # every 4th of s3..s12, from the 4th
    assert sum(split == "train" for split in assignment.values()) == 8
    with pytest.raises(ValueError, match="claimed by several splits"):
        common.assign_splits(["a"], {"train": ["a"], "target": ["*a"]})
