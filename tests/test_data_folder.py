"""The folder builder (`spectralmoe-build-folder`): users' own data, appended domain by domain; resumable shards; refusals with clear
errors; the real ISPRS crops of ../shared/data/real/isprs (skipped when absent)."""

import numpy as np
import pytest
from PIL import Image

from .conftest import real_data_dir
from .test_data_helpers import load, numpy_statistics, run_builder, write_png, write_tif


pytest.importorskip("rasterio")

LABEL_MAP = "0: ignore\n1: water\n2: land\n3: land\n9: ignore\n"  # codes 2 and 3 merge, 9 is ignored


def _domain(folder, rng, names, bands, size=300, dtype=np.uint16):
    made = {}
    for name in names:
        image = rng.integers(1, 4000, (bands, size, size)).astype(dtype)
        label = rng.choice(np.array([0, 1, 2, 3, 9], np.uint8), (1, size, size))
        write_tif(folder / "images" / f"{name}.tif", image)
        write_tif(folder / "labels" / f"{name}_label.tif", label)
        made[name] = (image, label[0])
    return made


def _build(domain_dir, output, *extra, band_names=("NIR", "R", "G", "B"), expect_failure=False):
    return run_builder("folder", "--images", domain_dir / "images", "--labels", domain_dir / "labels",
                       "--band-names", *band_names, "--output-dir", output, "--tile-size", 256, *extra,
                       expect_failure=expect_failure)


def test_folder_domains_append_resume_and_refuse(tmp_path):
    rng = np.random.default_rng(7)
    label_map = tmp_path / "labels.yaml"
    label_map.write_text(LABEL_MAP)
    source = _domain(tmp_path / "sensor_a", rng, ["a1", "a2", "a3"], 4)
    target = _domain(tmp_path / "sensor_b", rng, ["b1"], 4)
    out = tmp_path / "out"
    common = ("--label-map", label_map, "--items-per-shard", 1)
    _build(tmp_path / "sensor_a", out, "--domain", "sensor_a", "--wavelengths", 0.83, 0.665, 0.56, 0.49, *common)
    _build(tmp_path / "sensor_b", out, "--domain", "Sensor B", *common, band_names=("R", "G", "B", "NIR"))
    dataset, metadata = load(out, tmp_path)

    assert {split: len(part) for split, part in dataset.items()} == {"train": 12, "target_sensor_b": 4}  # 2 x 2 tiles
    assert metadata.id2label == {0: "water", 1: "land"} and metadata.target_splits == ["target_sensor_b"]
    assert metadata.bands_of("Sensor B") == (["R", "G", "B", "NIR"], None)
    assert metadata.band_names == ["NIR", "R", "G", "B"] and metadata.wavelengths == [0.83, 0.665, 0.56, 0.49]
    tile = {dataset["target_sensor_b"][i]["image_id"]: dataset["target_sensor_b"][i] for i in range(4)}["b1_y256_x0"]
    assert tile["pixel_values"].dtype == np.uint16 and tile["domain"] == "Sensor B"
    np.testing.assert_array_equal(tile["pixel_values"][:, :44], target["b1"][0][:, 256:, :256])
    codes = target["b1"][1][256:, :256]
    expected = np.select([codes == 1, (codes == 2) | (codes == 3)], [0, 1], 255).astype(np.uint8)
    np.testing.assert_array_equal(tile["label"][:44], expected)
    assert (tile["label"][44:] == 255).all() and (tile["pixel_values"][:, 44:] == 0).all()
    mean, std = numpy_statistics([image for image, _ in source.values()])  # padding left out
    np.testing.assert_allclose(metadata.mean, mean, rtol=1e-10)
    np.testing.assert_allclose(metadata.std, std, rtol=1e-10)

    # resume: complete shards are kept as they are, a missing one is rebuilt
    shards = sorted((out / "data" / "train").glob("*.parquet"))
    stamps = {p.name: p.stat().st_mtime_ns for p in shards}
    shards[1].unlink()
    _build(tmp_path / "sensor_a", out, "--domain", "sensor_a", "--wavelengths", 0.83, 0.665, 0.56, 0.49, *common)
    rebuilt = {p.name: p.stat().st_mtime_ns for p in sorted((out / "data" / "train").glob("*.parquet"))}
    assert rebuilt.keys() == stamps.keys()
    assert [name for name in stamps if rebuilt[name] != stamps[name]] == [shards[1].name]
    _, again = load(out, tmp_path)
    assert again.mean == metadata.mean and again.std == metadata.std

    # refusals say what was expected and what was found
    _domain(tmp_path / "three_bands", rng, ["c1"], 3)
    failure = _build(tmp_path / "three_bands", tmp_path / "other", "--domain", "c", *common, expect_failure=True)
    assert "expected 4 bands (NIR, R, G, B), found 3" in failure.stderr
    nan_image = np.full((4, 64, 64), 0.5, np.float32)
    nan_image[1, 3, 4] = np.inf  # NaN marks no-data (test_bad_input_04...); infinity is an error
    write_tif(tmp_path / "nan" / "images" / "n1.tif", nan_image)
    write_tif(tmp_path / "nan" / "labels" / "n1.tif", np.ones((1, 64, 64), np.uint8))
    failure = _build(tmp_path / "nan", tmp_path / "other", "--domain", "n", *common, expect_failure=True)
    assert "expected finite values or NaN (no-data), found 1 infinite values" in failure.stderr
    failure = _build(tmp_path / "sensor_b", out, "--domain", "c", "--class-names", "x", "y", "--role", "target",
                     expect_failure=True)
    assert "expected the dataset's classes" in failure.stderr
    _domain(tmp_path / "eight_bit", rng, ["d1"], 4, dtype=np.uint8)
    failure = _build(tmp_path / "eight_bit", out, "--domain", "d", *common, expect_failure=True)
    assert "already holds data with features" in failure.stderr


def test_palette_label_map_and_png(tmp_path):
    rng = np.random.default_rng(8)
    image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    colours = np.zeros((256, 256, 3), np.uint8)
    colours[:128] = (0, 0, 255)
    write_png(tmp_path / "images" / "x.png", image)
    write_png(tmp_path / "labels" / "x.png", colours)
    (tmp_path / "palette.yaml").write_text('"0,0,255": building\n"0,0,0": ignore\n')
    run_builder("folder", "--images", tmp_path / "images", "--labels", tmp_path / "labels", "--band-names",
                "R", "G", "B", "--label-map", tmp_path / "palette.yaml", "--domain", "rgb", "--output-dir",
                tmp_path / "out", "--tile-size", 256)
    dataset, metadata = load(tmp_path / "out", tmp_path)
    example = dataset["train"][0]
    assert example["image_id"] == "x" and metadata.id2label == {0: "building"}
    np.testing.assert_array_equal(example["pixel_values"], image.transpose(2, 0, 1))
    assert (example["label"][:128] == 0).all() and (example["label"][128:] == 255).all()


def test_real_isprs_crops_through_build_folder(tmp_path):
    """Potsdam (R-G-B) as the source domain, Vaihingen (NIR-R-G) as a target domain, loaded as training loads them."""
    isprs = real_data_dir("isprs")
    classes = ["impervious surface", "building", "low vegetation", "tree", "car", "clutter"]
    out = tmp_path / "isprs"
    for city, bands, wavelengths in [("potsdam", ("R", "G", "B"), (0.665, 0.56, 0.49)),
                                     ("vaihingen", ("NIR", "R", "G"), (0.84, 0.665, 0.56))]:
        run_builder("folder", "--images", isprs / city / "images", "--labels", isprs / city / "labels",
                    "--band-names", *bands, "--wavelengths", *wavelengths, "--class-names", *classes, "--domain", city,
                    "--output-dir", out)
    dataset, metadata = load(out, tmp_path)

    assert {split: len(part) for split, part in dataset.items()} == {"train": 1, "target_vaihingen": 1}
    assert metadata.source_split == "train" and metadata.target_splits == ["target_vaihingen"]
    assert metadata.num_labels == 6 and metadata.bands_of("vaihingen")[0] == ["NIR", "R", "G"]
    for split, city in [("train", "potsdam"), ("target_vaihingen", "vaihingen")]:
        example = dataset[split][0]
        raw_label = np.asarray(Image.open(next((isprs / city / "labels").iterdir())))
        assert example["pixel_values"].shape == (3, 512, 512) and example["pixel_values"].dtype == np.uint8
        assert example["domain"] == city
        np.testing.assert_array_equal(example["label"], np.where(raw_label == 0, 255, raw_label - 1))
        assert set(np.unique(example["label"])) <= {*range(6), 255}
    assert len(metadata.mean) == 3 and all(0 < s for s in metadata.std)
