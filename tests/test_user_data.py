"""Users' own GeoTIFF tiles through `spectralmoe-build-folder` (rows of ../shared/specs/BAD_INPUTS.md): the files'
own no-data, pixels missing in some bands, tiny images, interrupted builds, one-line errors, and band lists from
files or band descriptions."""

import json
import warnings

import numpy as np
import pytest

from modeling_spectralmoe.data.builders import folder

from .test_data_helpers import load, run_builder


rasterio = pytest.importorskip("rasterio")


def write_geotiff(path, array, nodata=None, mask=None, descriptions=None, wavelength_tags=None):
    """A (C, H, W) GeoTIFF with an optional nodata tag, internal mask ((H, W), False = masked), band descriptions and
    per-band `wavelength` tags (nanometres)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = array.shape
    with warnings.catch_warnings(), rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", height=height, width=width, count=count,
                           dtype=array.dtype.name, nodata=nodata) as target:
            target.write(array)
            if mask is not None:
                target.write_mask(np.where(mask, 255, 0).astype(np.uint8))
            for band, description in enumerate(descriptions or [], start=1):
                target.set_band_description(band, description)
            for band, wavelength in enumerate(wavelength_tags or [], start=1):
                target.update_tags(band, wavelength=str(wavelength), wavelength_units="Nanometers")
    return path


def write_labels(folder_path, names, size, rng):
    for name in names:
        write_geotiff(folder_path / f"{name}.tif", rng.integers(1, 3, (1, *size)).astype(np.uint8))


def build(tmp_path, images, *extra):
    folder.main(["--images", str(images), "--labels", str(tmp_path / "labels"), "--class-names", "a", "b",
                 "--output-dir", str(tmp_path / "out"), "--tile-size", "64", "--domain", "d", *map(str, extra)])
    return load(tmp_path / "out", tmp_path)


def numpy_band_statistics(images, valid_masks):
    pixels = np.concatenate([image[:, valid].astype(np.float64) for image, valid in zip(images, valid_masks)], 1)
    return pixels.mean(1), pixels.std(1)


def test_bad_input_03_geotiff_nodata_tag_is_honoured_without_the_flag(tmp_path):
    rng = np.random.default_rng(3)
    image = rng.integers(100, 4000, (3, 64, 64)).astype(np.uint16)
    image[:, :10] = 65535  # the file's no-data
    write_geotiff(tmp_path / "images" / "t.tif", image, nodata=65535)
    write_labels(tmp_path / "labels", ["t"], (64, 64), rng)
    dataset, metadata = build(tmp_path, tmp_path / "images", "--band-names", "R", "G", "B")
    mean, std = numpy_band_statistics([image], [np.ones((64, 64), bool) & (np.arange(64) >= 10)[:, None]])
    np.testing.assert_allclose(metadata.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(metadata.std, std, rtol=1e-6)
    assert metadata.nodata == 65535 and (dataset["train"][0]["label"][:10] == 255).all()


def test_bad_input_04_a_pixel_is_valid_only_where_every_band_is_valid(tmp_path):
    """Nodata tag, internal mask, NaN and --nodata, each in one band only, each make the whole pixel no-data."""
    rng = np.random.default_rng(4)
    images, valid_masks = [], []
    for index in range(2):
        image = rng.normal(500, 80, (4, 70, 64)).astype(np.float32)
        valid = np.ones((70, 64), bool)
        image[1, 0, :5], valid[0, :5] = -9999, False  # the file's nodata tag, in band 1 only
        image[2, 1, :7], valid[1, :7] = np.nan, False  # NaN in band 2 only
        image[3, 2, :3], valid[2, :3] = 7.0, False  # --nodata in band 3 only
        mask = np.ones((70, 64), bool)
        mask[3:5, 10:20], valid[3:5, 10:20] = False, False  # the file's internal mask
        write_geotiff(tmp_path / "images" / f"t{index}.tif", image, nodata=-9999, mask=mask)
        images.append(image)
        valid_masks.append(valid)
    write_labels(tmp_path / "labels", ["t0", "t1"], (70, 64), rng)
    dataset, metadata = build(tmp_path, tmp_path / "images", "--band-names", "NIR", "R", "G", "B", "--nodata", 7)
    mean, std = numpy_band_statistics(images, valid_masks)
    np.testing.assert_allclose(metadata.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(metadata.std, std, rtol=1e-6)
    first = {example["image_id"]: example for example in dataset["train"]}["t0_y0_x0"]
    invalid = ~valid_masks[0][:64]
    assert (first["pixel_values"][:, invalid] == 7).all() and (first["label"][invalid] == 255).all()


def test_bad_input_11_tiles_below_the_decoders_minimum_are_refused_and_tiny_images_padded(tmp_path, capsys):
    rng = np.random.default_rng(11)
    write_geotiff(tmp_path / "images" / "p.tif", rng.integers(0, 255, (3, 15, 15)).astype(np.uint8))
    write_labels(tmp_path / "labels", ["p"], (15, 15), rng)
    with pytest.raises(SystemExit):
        folder.main(["--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "--band-names",
                     "R", "G", "B", "--class-names", "a", "b", "--domain", "d", "--output-dir", str(tmp_path / "o"),
                     "--tile-size", "8"])
    assert "--tile-size must be at least 64" in capsys.readouterr().err
    dataset, _ = build(tmp_path, tmp_path / "images", "--band-names", "R", "G", "B")  # a 15 x 15 patch, padded
    example = dataset["train"][0]
    assert example["pixel_values"].shape == (3, 64, 64) and (example["label"][15:] == 255).all()


def test_bad_input_13_an_interrupted_first_build_reruns_as_the_source(tmp_path):
    rng = np.random.default_rng(13)
    write_geotiff(tmp_path / "images" / "a.tif", rng.integers(0, 255, (3, 64, 64)).astype(np.uint8))
    write_labels(tmp_path / "labels", ["a"], (64, 64), rng)
    out = tmp_path / "out"
    (out / "data" / "train").mkdir(parents=True)  # what Ctrl-C during the first shard leaves behind
    (out / "data" / "train" / "00000-0123456789.parquet.tmp").write_bytes(b"partial")
    dataset, metadata = build(tmp_path, tmp_path / "images", "--band-names", "R", "G", "B")
    assert list(dataset) == ["train"] and metadata.target_splits == [] and metadata.mean is not None
    assert not list((out / "data" / "train").glob("*.tmp"))


def test_bad_input_14_builder_errors_are_one_line_naming_the_file(tmp_path):
    rng = np.random.default_rng(14)
    image = write_geotiff(tmp_path / "images" / "a.tif", rng.integers(0, 255, (3, 64, 64)).astype(np.uint8))
    write_labels(tmp_path / "labels", ["a"], (64, 64), rng)
    result = run_builder("folder", "--images", tmp_path / "images", "--labels", tmp_path / "labels", "--band-names",
                         "NIR", "R", "G", "B", "--class-names", "a", "b", "--domain", "d", "--output-dir",
                         tmp_path / "out", expect_failure=True)
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1:] == [f"error: {image}: expected 4 bands (NIR, R, G, B), found 3 (array shape (3, 64, 64))."]


@pytest.mark.parametrize("kind", ["json", "yaml", "csv", "hdr", "geotiff"])
def test_small_band_names_and_wavelengths_from_a_file_or_the_geotiff(tmp_path, kind):
    names = [f"b{index}" for index in range(200)]
    nanometres = np.linspace(400, 2500, 200).round(2).tolist()
    micrometres = [round(value / 1000, 6) for value in nanometres]
    files = {
        "json": lambda path: path.write_text(json.dumps({"band_names": names, "wavelengths": micrometres})),
        "yaml": lambda path: path.write_text("".join(f"- {{name: {n}, wavelength: {w}}}\n"
                                                     for n, w in zip(names, micrometres))),
        "csv": lambda path: path.write_text("name,wavelength\n" + "".join(f"{n},{w}\n"
                                                                          for n, w in zip(names, micrometres))),
        "hdr": lambda path: path.write_text(f"ENVI\nbands = 200\nband names = {{{', '.join(names)}}}\nwavelength "
                                            f"units = Nanometers\nwavelength = {{{', '.join(map(str, nanometres))}}}\n"),
    }
    if kind == "geotiff":
        image = write_geotiff(tmp_path / "cube.tif", np.zeros((200, 4, 4), np.uint16), descriptions=names,
                              wavelength_tags=nanometres)
        found = folder.band_descriptions(image)
    else:
        path = tmp_path / f"bands.{kind}"
        files[kind](path)
        found = folder.read_band_file(path)
    assert found[0] == names
    np.testing.assert_allclose(found[1], micrometres, rtol=1e-9)
