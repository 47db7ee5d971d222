"""Helpers of the data tests: miniature releases written on the fly, and the package's builders run as commands."""

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modeling_spectralmoe.data.schema import load_spectral_dataset


REPO = Path(__file__).resolve().parents[1]


def run_builder(name: str, *args, expect_failure: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m modeling_spectralmoe.data.builders.<name> ARGS` (the `spectralmoe-build-<name>` command) like a
    user; fail the test with its stderr if it fails (or succeeds when `expect_failure`)."""
    result = subprocess.run([sys.executable, "-m", f"modeling_spectralmoe.data.builders.{name}", *map(str, args)],
                            capture_output=True, text=True, cwd=REPO)
    if (result.returncode != 0) != expect_failure:
        pytest.fail(f"builder {name} exited with {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def write_tif(path: Path, array: np.ndarray) -> Path:
    """A (C, H, W) GeoTIFF (deflate-compressed, no georeference)."""
    rasterio = pytest.importorskip("rasterio")
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = array.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", height=height, width=width, count=count,
                           dtype=array.dtype.name, compress="deflate") as target:
            target.write(array)
    return path


def write_png(path: Path, array: np.ndarray) -> Path:
    """An (H, W) index or (H, W, 3) RGB PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def blocky(rng: np.random.Generator, shape: tuple[int, ...], low: int, high: int, dtype, block: int = 64):
    """Random values constant over block x block squares (compresses well, so miniature releases write fast)."""
    *lead, height, width = shape
    coarse = rng.integers(low, high, (*lead, -(-height // block), -(-width // block))).astype(dtype)
    return np.repeat(np.repeat(coarse, block, axis=-2), block, axis=-1)[..., :height, :width]


def load(output_dir: Path, tmp_path: Path):
    """`load_spectral_dataset` with the arrow cache inside the test's temporary folder."""
    return load_spectral_dataset(output_dir, cache_dir=str(tmp_path / "hf_cache"))


def numpy_statistics(images: list[np.ndarray], nodata=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean / std of (C, H, W) images with numpy (float64 sums of values and squares, band by band to bound
    memory), pixels whose bands all equal `nodata` left out."""
    bands = images[0].shape[0]
    total, total_squares, count = np.zeros(bands), np.zeros(bands), 0
    for image in images:
        pixels = image.reshape(bands, -1)
        if nodata is not None:
            pixels = pixels[:, ~(pixels == nodata).all(axis=0)]
        count += pixels.shape[1]
        for band in range(bands):
            values = pixels[band].astype(np.float64)
            total[band] += values.sum()
            total_squares[band] += values @ values
    mean = total / count
    return mean, np.sqrt(total_squares / count - mean**2)
