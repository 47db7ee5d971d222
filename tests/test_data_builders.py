"""Each benchmark builder of the package (`modeling_spectralmoe.data.builders`) run as a command on a miniature release
made here in the layout of SPEC.md section 8 (same file names, dtypes, band counts, label codes and palettes; tiny sizes where the protocol
allows), then the written dataset checked: splits, shapes, dtypes, label remapping, ignore handling, tile counts,
metadata."""

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from modeling_spectralmoe.data.schema import SpectralMetadata

from .test_data_helpers import blocky, load, numpy_statistics, run_builder, write_png, write_tif


pytest.importorskip("rasterio")


def shifted(codes: np.ndarray) -> np.ndarray:
    """The expected labels of the usual protocol: 0 -> 255, k -> k - 1."""
    return np.where(codes == 0, 255, codes.astype(np.int64) - 1).astype(np.uint8)


def column(split, name: str) -> list[str]:
    """One string column of a split, without decoding the pixels."""
    return [str(value) for value in split.select_columns([name])[:][name]]


def rows_by_id(split) -> dict[str, dict]:
    return {split[i]["image_id"]: split[i] for i in range(len(split))}


# ---- LoveDA ----------------------------------------------------------------------------------------------------


def test_loveda(tmp_path):
    rng, raw, made = np.random.default_rng(0), tmp_path / "LoveDA", {}
    for stage, scene, names in [("Train", "Rural", ["0", "1"]), ("Val", "Rural", ["2"]),
                                ("Val", "Urban", ["3", "4"]), ("Train", "Urban", ["5"])]:
        for name in names:
            image, mask = blocky(rng, (1024, 1024, 3), 0, 256, np.uint8), blocky(rng, (1024, 1024), 0, 8, np.uint8)
            write_png(raw / stage / scene / "images_png" / f"{name}.png", image)
            write_png(raw / stage / scene / "masks_png" / f"{name}.png", mask)
            made[f"{scene.lower()}_{name}"] = (image.transpose(2, 0, 1), mask)
    run_builder("loveda", "--raw-dir", raw, "--output-dir", tmp_path / "out")
    dataset, metadata = load(tmp_path / "out", tmp_path)

    assert {split: len(part) for split, part in dataset.items()} == {"train": 2, "validation": 1, "target": 2}
    target = rows_by_id(dataset["target"])
    assert sorted(target) == ["urban_3", "urban_4"] and target["urban_3"]["domain"] == "urban"
    assert target["urban_3"]["pixel_values"].dtype == np.uint8 and target["urban_3"]["pixel_values"].shape == (3, 1024,
                                                                                                                1024)
    np.testing.assert_array_equal(target["urban_3"]["pixel_values"], made["urban_3"][0])
    np.testing.assert_array_equal(target["urban_3"]["label"], shifted(made["urban_3"][1]))
    assert metadata.band_names == ["R", "G", "B"] and metadata.num_labels == 7 and metadata.target_splits == ["target"]
    mean, std = numpy_statistics([made["rural_0"][0], made["rural_1"][0]])
    np.testing.assert_allclose(metadata.mean, mean, rtol=1e-10)
    np.testing.assert_allclose(metadata.std, std, rtol=1e-10)
    assert (tmp_path / "out" / "README.md").read_text().count("data/target/*.parquet") == 1


# ---- FLAIR -----------------------------------------------------------------------------------------------------


def _flair_release(raw, rng, patches):
    made = {}
    for stage, department, zone, number in patches:
        image = blocky(rng, (5, 512, 512), 0, 256, np.uint8)
        mask = blocky(rng, (1, 512, 512), 1, 20, np.uint8)
        write_tif(raw / f"flair_aerial_{stage}" / department / zone / "img" / f"IMG_{number}.tif", image)
        write_tif(raw / f"flair_labels_{stage}" / department / zone / "msk" / f"MSK_{number}.tif", mask)
        made[f"IMG_{number}"] = (image, mask[0])
    return made


def test_flair(tmp_path):
    rng, raw = np.random.default_rng(1), tmp_path / "FLAIR1"
    made = _flair_release(raw, rng, [("train", "D001_2019", "Z1_AA", "001"), ("train", "D001_2019", "Z2_UF", "002"),
                                     ("train", "D002_2020", "Z7_NA", "010"), ("test", "D010_2021", "Z3_UU", "100")])
    run_builder("flair", "--raw-dir", raw, "--output-dir", tmp_path / "out", "--items-per-shard", 2)
    dataset, metadata = load(tmp_path / "out", tmp_path)

    assert {split: len(part) for split, part in dataset.items()} == {"train": 3, "target": 1}
    assert len(list((tmp_path / "out" / "data" / "train").glob("*.parquet"))) == 2
    example = dataset["target"][0]
    assert example["image_id"] == "IMG_100" and example["domain"] == "D010_2021"
    assert example["pixel_values"].shape == (4, 512, 512)  # elevation dropped
    np.testing.assert_array_equal(example["pixel_values"], made["IMG_100"][0][:4])
    codes = made["IMG_100"][1]
    expected = np.where(codes <= 12, codes.astype(np.int64) - 1, 255).astype(np.uint8)  # 13..19 -> ignore
    np.testing.assert_array_equal(example["label"], expected)
    assert set(column(dataset["train"], "domain")) == {"D001_2019", "D002_2020"}
    assert metadata.band_names == ["R", "G", "B", "NIR"] and metadata.num_labels == 12
    mean, _ = numpy_statistics([made[k][0][:4] for k in ("IMG_001", "IMG_002", "IMG_010")])
    np.testing.assert_allclose(metadata.mean, mean, rtol=1e-10)

    write_tif(raw / "flair_aerial_test" / "D010_2021" / "Z3_UU" / "img" / "IMG_100.tif",
              np.zeros((4, 512, 512), np.uint8))
    failure = run_builder("flair", "--raw-dir", raw, "--output-dir", tmp_path / "out2", expect_failure=True)
    assert "expected 5 bands (R, G, B, NIR, elevation), found 4" in failure.stderr


# ---- WHU-OHS ---------------------------------------------------------------------------------------------------

FIRST_LEVEL = {0: 255, **{c: 0 for c in (1, 2)}, **{c: 1 for c in range(3, 7)}, **{c: 2 for c in range(7, 10)},
               **{c: 3 for c in range(10, 15)}, **{c: 4 for c in range(15, 18)}, **{c: 5 for c in range(18, 24)},
               24: 6}


def test_whu_ohs(tmp_path):
    rng, raw, made = np.random.default_rng(2), tmp_path / "WHU-OHS", {}
    files = [("tr", "O1_0001", 512), ("val", "O1_0002", 512), ("tr", "O2_0001", 512), ("ts", "O2_0003", 512),
             ("tr", "O3_0001", 512), ("ts", "O3_0002", 300), ("tr", "O4_0001", 512)]
    for folder, name, size in files:
        image = blocky(rng, (32, size, size), 1, 6000, np.int16)
        image[:, :40] = 0  # no-data rows
        label = blocky(rng, (1, size, size), 0, 25, np.uint8)
        write_tif(raw / folder / "image" / f"{name}.tif", image)
        write_tif(raw / folder / "label" / f"{name}.tif", label)
        made[name] = (image, label[0])
    splits = tmp_path / "regions.yaml"
    splits.write_text("train: [O1, O2]\ntarget: [O3]\n")  # O4: in no split
    run_builder("whu_ohs", "--raw-dir", raw, "--output-dir", tmp_path / "out", "--splits", splits)
    dataset, metadata = load(tmp_path / "out", tmp_path)

    ids = {split: sorted(column(part, "image_id")) for split, part in dataset.items()}
    assert ids == {"train": ["O1_0001", "O2_0001"], "validation": ["O1_0002", "O2_0003"],
                   "target": ["O3_0001", "O3_0002"]}
    target = rows_by_id(dataset["target"])
    assert target["O3_0001"]["pixel_values"].dtype == np.int16 and target["O3_0001"]["domain"] == "O3"
    np.testing.assert_array_equal(target["O3_0001"]["pixel_values"], made["O3_0001"][0])
    lookup = np.array([FIRST_LEVEL[c] for c in range(25)], dtype=np.uint8)
    np.testing.assert_array_equal(target["O3_0001"]["label"], lookup[made["O3_0001"][1]])
    small = target["O3_0002"]  # 300 x 300 file -> one padded 512 tile
    np.testing.assert_array_equal(small["pixel_values"][:, :300, :300], made["O3_0002"][0])
    assert (small["pixel_values"][:, 300:] == 0).all() and (small["label"][:, 300:] == 255).all()
    assert metadata.num_labels == 7 and len(metadata.wavelengths) == 32 and metadata.nodata == 0
    assert metadata.wavelengths[0] == 0.466 and metadata.wavelengths[-1] == 0.94
    mean, std = numpy_statistics([made["O1_0001"][0], made["O2_0001"][0]], nodata=0)
    np.testing.assert_allclose(metadata.mean, mean, rtol=1e-10)
    np.testing.assert_allclose(metadata.std, std, rtol=1e-10)


# ---- Five-Billion-Pixels ---------------------------------------------------------------------------------------

GF2_NAME = "GF2_PMS1__L1A0000564539-MSS1"


@pytest.fixture(scope="module")
def gf2_scene(tmp_path_factory):
    """One GF-2 scene at full size (6908 x 7300, padding 0) and its index label, written once."""
    folder, rng = tmp_path_factory.mktemp("gf2"), np.random.default_rng(3)
    image = np.zeros((4, 6908, 7300), np.uint8)
    image[:, 54:6854, 60:7260] = blocky(rng, (4, 6800, 7200), 1, 256, np.uint8, block=256)
    label = np.zeros((6908, 7300), np.uint8)
    label[54:6854, 60:7260] = blocky(rng, (6800, 7200), 0, 25, np.uint8, block=256)
    return (write_tif(folder / f"{GF2_NAME}.tiff", image), write_png(folder / f"{GF2_NAME}_24label.png", label),
            image, label)


def _link_scene(raw, scene, name):
    (raw / "Image__8bit_NirRGB").mkdir(parents=True, exist_ok=True)
    (raw / "Annotation__index").mkdir(parents=True, exist_ok=True)
    os.link(scene[0], raw / "Image__8bit_NirRGB" / f"{name}.tiff")
    os.link(scene[1], raw / "Annotation__index" / f"{name}_24label.png")


def _check_gf2_tiles(split, scene, name):
    assert len(split) == 210
    tiles = rows_by_id(split)
    first, last = tiles[f"{name}_y0_x0"], tiles[f"{name}_y6656_x7168"]
    np.testing.assert_array_equal(first["pixel_values"], scene[2][:, 54:566, 60:572])
    np.testing.assert_array_equal(first["label"], shifted(scene[3][54:566, 60:572]))
    np.testing.assert_array_equal(last["pixel_values"][:, :144, :32], scene[2][:, 6710:6854, 7228:7260])
    assert (last["pixel_values"][:, 144:] == 0).all() and (last["label"][144:] == 255).all()
    assert (last["label"][:, 32:] == 255).all()


def test_five_billion_pixels_cross_sensor(tmp_path, gf2_scene):
    rng, raw = np.random.default_rng(4), tmp_path / "FBP"
    _link_scene(raw, gf2_scene, GF2_NAME)
    targets = {"gf1": ("GF-1", "Image", "Annotation__index", (1500, 1300)),
               "planetscope": ("PlanetScope", "images", "labels", (1100, 1100)),
               "sentinel2": ("Sentinel-2", "image", "Annotation__index", (600, 800))}
    made = {}
    for sensor, (folder, images, labels, (height, width)) in targets.items():
        image = blocky(rng, (4, height, width), 1, 256, np.uint8, block=32)
        label = np.zeros((1, height, width), np.uint8)
        label[0, 300:400, 100:300] = blocky(rng, (100, 200), 1, 25, np.uint8, block=32)
        write_tif(raw / folder / images / f"{sensor}_scene.tif", image)
        write_tif(raw / folder / labels / f"{sensor}_scene.tif", label)
        made[sensor] = (image, label[0])
    run_builder("five_billion_pixels", "--raw-dir", raw, "--output-dir", tmp_path / "out",
                "--task", "cross_sensor")
    dataset, metadata = load(tmp_path / "out", tmp_path)

    assert list(dataset) == ["train", "target_gf1", "target_planetscope", "target_sentinel2"]
    _check_gf2_tiles(dataset["train"], gf2_scene, GF2_NAME)
    assert dataset["train"][0]["domain"] == "gf2" and dataset["train"][0]["pixel_values"].dtype == np.uint8
    # GF-1: labelled box rows 300..399, columns 100..299 -> window (350 - 512, 200 - 512) moved inside: (0, 0)
    gf1 = rows_by_id(dataset["target_gf1"])
    assert sorted(gf1) == ["gf1_scene_y0_x0", "gf1_scene_y0_x512", "gf1_scene_y512_x0", "gf1_scene_y512_x512"]
    tile = gf1["gf1_scene_y512_x512"]
    np.testing.assert_array_equal(tile["pixel_values"], made["gf1"][0][:, 512:1024, 512:1024])
    assert tile["domain"] == "gf1"
    # Sentinel-2: 600 x 800 image, smaller than the window: the window is centred and padded (image 0, label 255)
    s2 = rows_by_id(dataset["target_sentinel2"])
    assert len(s2) == 4 and "sentinel2_scene_y-162_x-312" in s2
    corner = s2["sentinel2_scene_y-162_x-312"]
    assert (corner["pixel_values"][:, :162] == 0).all() and (corner["label"][:162] == 255).all()
    np.testing.assert_array_equal(corner["pixel_values"][:, 162:, 312:], made["sentinel2"][0][:, :350, :200])
    np.testing.assert_array_equal(corner["label"][162:, 312:], shifted(made["sentinel2"][1][:350, :200]))
    assert metadata.band_names == ["NIR", "R", "G", "B"] and metadata.num_labels == 24 and metadata.nodata == 0
    assert metadata.target_splits == ["target_gf1", "target_planetscope", "target_sentinel2"]
    mean, std = numpy_statistics([gf2_scene[2][:, 54:6854, 60:7260]], nodata=0)
    np.testing.assert_allclose(metadata.mean, mean, rtol=1e-10)
    np.testing.assert_allclose(metadata.std, std, rtol=1e-10)


def test_five_billion_pixels_cross_regional(tmp_path, gf2_scene):
    raw = tmp_path / "FBP"
    for name in ("GF2_source_scene", "GF2_target_scene"):
        _link_scene(raw, gf2_scene, name)
    splits = tmp_path / "cities.yaml"
    splits.write_text("domains:\n  city_b: [GF2_target_scene]\ntrain: ['*']\ntarget: [city_b]\n")
    run_builder("five_billion_pixels", "--raw-dir", raw, "--output-dir", tmp_path / "out",
                "--task", "cross_regional", "--splits", splits)
    metadata = SpectralMetadata.load(tmp_path / "out")

    # read the shards' small columns directly (the pixels were checked in the cross-sensor test)
    rows = {split: pq.read_table(tmp_path / "out" / "data" / split, columns=["domain", "image_id"]).to_pydict()
            for split in ("train", "target")}
    assert sorted(p.name for p in (tmp_path / "out" / "data").iterdir()) == ["target", "train"]
    assert metadata.target_splits == ["target"] and metadata.source_split == "train"
    assert len(rows["train"]["image_id"]) == len(rows["target"]["image_id"]) == 210
    assert set(rows["target"]["domain"]) == {"city_b"} and set(rows["train"]["domain"]) == {"gf2_train"}
    assert "GF2_target_scene_y6656_x7168" in rows["target"]["image_id"]


# ---- ISPRS Potsdam -> Vaihingen --------------------------------------------------------------------------------

PALETTE = [(255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0), (0, 0, 0)]


def _colour_label(rng, height, width):
    classes = blocky(rng, (height, width), 0, 7, np.uint8, block=32)  # 6 = black boundary
    colours = np.array(PALETTE, dtype=np.uint8)[classes].transpose(2, 0, 1)
    return colours, np.where(classes == 6, 255, classes).astype(np.uint8)


def test_potsdam_vaihingen(tmp_path):
    rng, raw, made = np.random.default_rng(5), tmp_path / "ISPRS", {}
    releases = [("potsdam/2_10", "Potsdam/2_Ortho_RGB/top_potsdam_2_10_RGB.tif",
                 "Potsdam/5_Labels_all_noBoundary/top_potsdam_2_10_label_noBoundary.tif", (768, 1024)),
                ("potsdam/2_13", "Potsdam/2_Ortho_RGB/top_potsdam_2_13_RGB.tif",
                 "Potsdam/5_Labels_all_noBoundary/top_potsdam_2_13_label_noBoundary.tif", (512, 512)),
                ("vaihingen/area1", "Vaihingen/top/top_mosaic_09cm_area1.tif",
                 "Vaihingen/eroded/top_mosaic_09cm_area1_noBoundary.tif", (512, 512)),
                ("vaihingen/area2", "Vaihingen/top/top_mosaic_09cm_area2.tif",
                 "Vaihingen/eroded/top_mosaic_09cm_area2_noBoundary.tif", (700, 600))]
    for key, image_path, label_path, (height, width) in releases:
        image = blocky(rng, (3, height, width), 0, 256, np.uint8, block=32)
        colours, classes = _colour_label(rng, height, width)
        write_tif(raw / image_path, image)
        write_tif(raw / label_path, colours)
        made[key] = (image, classes)
    for key, name in [("2_10", "Potsdam/5_Labels_all/top_potsdam_2_10_label.tif"),
                      ("2_13", "Potsdam/5_Labels_all/top_potsdam_2_13_label.tif"),
                      ("area1", "Vaihingen/gts_for_participants/top_mosaic_09cm_area1.tif"),
                      ("area2", "Vaihingen/gts_for_participants/top_mosaic_09cm_area2.tif")]:
        image = made[f"{'potsdam' if '_' in key else 'vaihingen'}/{key}"][0]
        full = np.full(image.shape, 255, np.uint8)
        full[:, 0, 0] = (10, 20, 30)  # not an ISPRS colour
        write_tif(raw / name, full)
    run_builder("potsdam_vaihingen", "--raw-dir", raw, "--output-dir", tmp_path / "out")
    dataset, metadata = load(tmp_path / "out", tmp_path)

    # default split file: 2_10 is an ISPRS training tile, 2_13 a test tile, area2 a test area, area1 not used
    assert {split: len(part) for split, part in dataset.items()} == {"train": 6, "validation": 1, "target": 4}
    train = rows_by_id(dataset["train"])
    assert sorted(train) == sorted(f"potsdam_2_10_y{y}_x{x}" for y in (0, 256) for x in (0, 256, 512))
    crop = train["potsdam_2_10_y256_x512"]
    np.testing.assert_array_equal(crop["pixel_values"], made["potsdam/2_10"][0][:, 256:768, 512:1024])
    np.testing.assert_array_equal(crop["label"], made["potsdam/2_10"][1][256:768, 512:1024])
    target = rows_by_id(dataset["target"])
    assert sorted(target) == sorted(f"vaihingen_area2_y{y}_x{x}" for y in (0, 188) for x in (0, 88))
    np.testing.assert_array_equal(target["vaihingen_area2_y188_x88"]["label"], made["vaihingen/area2"][1][188:, 88:])
    assert target["vaihingen_area2_y0_x0"]["domain"] == "vaihingen"
    assert metadata.bands_of("vaihingen")[0] == ["NIR", "R", "G"] and metadata.bands_of("potsdam")[0] == ["R", "G", "B"]
    assert metadata.id2label[0] == "impervious surface" and metadata.num_labels == 6

    failure = run_builder("potsdam_vaihingen", "--raw-dir", raw, "--output-dir", tmp_path / "out_full",
                          "--labels", "full", expect_failure=True)
    assert "found 1 pixels of other colours, e.g. [(10, 20, 30)]" in failure.stderr


# ---- OpenEarthMap ----------------------------------------------------------------------------------------------


def test_openearthmap(tmp_path):
    rng, raw, made = np.random.default_rng(6), tmp_path / "OpenEarthMap_wo_xBD", {}
    for region in ("aachen", "accra", "abancay", "unlistedtown"):
        image = blocky(rng, (3, 600, 700), 0, 256, np.uint8, block=32)
        label = blocky(rng, (1, 600, 700), 0, 9, np.uint8, block=32)
        write_tif(raw / region / "images" / f"{region}_1.tif", image)
        write_tif(raw / region / "labels" / f"{region}_1.tif", label)
        made[region] = (image, label[0])
    write_tif(raw / "aachen" / "images" / "aachen_2.tif", np.zeros((3, 600, 700), np.uint8))  # label withheld
    result = run_builder("openearthmap", "--raw-dir", raw, "--output-dir", tmp_path / "out")
    dataset, metadata = load(tmp_path / "out", tmp_path)

    assert "skipping 1 images without label" in result.stderr and "left out" in result.stderr
    assert {split: len(part) for split, part in dataset.items()} == {
        "train": 1, "target_africa": 1, "target_south_america": 1}  # each 600 x 700 image whole, padded to 1024
    whole = rows_by_id(dataset["target_africa"])["accra_1"]  # a whole image keeps its name
    assert whole["domain"] == "africa" and whole["pixel_values"].shape == (3, 1024, 1024)
    np.testing.assert_array_equal(whole["pixel_values"][:, :600, :700], made["accra"][0])
    np.testing.assert_array_equal(whole["label"][:600, :700], shifted(made["accra"][1]))
    assert (whole["label"][600:] == 255).all() and (whole["pixel_values"][:, :, 700:] == 0).all()
    assert metadata.num_labels == 8 and metadata.target_splits == ["target_africa", "target_south_america"]
    mean, std = numpy_statistics([made["aachen"][0]])  # padding is left out of the statistics
    np.testing.assert_allclose(metadata.mean, mean, rtol=1e-10)
    np.testing.assert_allclose(metadata.std, std, rtol=1e-10)
