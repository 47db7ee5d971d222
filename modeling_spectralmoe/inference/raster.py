"""Raster reading and writing for scene prediction (rasterio, imported here only, so loading a model never needs it).

Reading: windows of chosen bands in raw units with their validity (the file's masks: per-band or per-dataset nodata,
NaN, internal masks), padded beyond the file's edge with invalid pixels. Writing: tiled, compressed GeoTIFFs written
strip by strip under a `.partial` name, finished as Cloud-Optimized GeoTIFFs (GDAL's COG driver can only copy, never
write in place) and renamed when complete.
"""

import json
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# GDAL's block cache would otherwise grow with the scene (default: 5 % of RAM) and hide the bounded memory of strips;
# a row of windows of a 10,980-px wide, 12-band uint16 scene spans about 140 MB of input tiles.
GDAL_CACHE_MB = 160
BLOCK_SIZE = 512


def _rasterio():
    try:
        import rasterio
        import rasterio.shutil
    except ImportError as error:
        raise ImportError("Scene prediction reads and writes rasters with rasterio: pip install 'spectralmoe[geo]'.") \
            from error
    return rasterio


@contextmanager
def raster_environment():
    """GDAL settings of a prediction run: a bounded block cache, no complaint about non-georeferenced files (the
    caller warns once per scene), and none for every window of a file whose nodata tag takes precedence over an
    alpha band (GDAL's rule, which the masks read here follow)."""
    rasterio = _rasterio()
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        warnings.simplefilter("ignore", rasterio.errors.NodataShadowWarning)
        yield


@dataclass
class SceneInfo:
    """What prediction needs to know about an input raster.

    Args:
        height, width (`int`): size in pixels.
        count (`int`): number of bands.
        dtype (`str`): numpy dtype name of the bands.
        descriptions (`list[str | None]`): GDAL band descriptions (names), one per band.
        wavelengths (`list[float | None]`): central wavelength of each band in micrometres, from GDAL's `IMAGERY`
            metadata (`CENTRAL_WAVELENGTH_UM`) or a `wavelength` band tag.
        crs: the coordinate reference system, `None` for plain TIFF/PNG files.
        transform: pixel-to-map affine transform (the identity when the file has none).
        scales, offsets (`list[float]`): per-band value scaling the file declares (1 and 0 when none).
        nodata (`list[float | None]`): per-band nodata values.
    """

    height: int
    width: int
    count: int
    dtype: str
    descriptions: list
    wavelengths: list
    crs: object
    transform: object
    scales: list
    offsets: list
    nodata: list

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None


def read_scene_info(path: str) -> SceneInfo:
    rasterio = _rasterio()
    with raster_environment(), rasterio.open(path) as source:
        return SceneInfo(
            height=source.height, width=source.width, count=source.count, dtype=source.dtypes[0],
            descriptions=list(source.descriptions),
            wavelengths=[_band_wavelength(source, index) for index in source.indexes],
            crs=source.crs, transform=source.transform, scales=list(source.scales), offsets=list(source.offsets),
            nodata=list(source.nodatavals),
        )


def _band_wavelength(source, index: int) -> float | None:
    value = source.tags(index, ns="IMAGERY").get("CENTRAL_WAVELENGTH_UM") or source.tags(index).get("wavelength")
    return None if value is None else float(value)


class WindowReader:
    """Reads windows of one raster; opens its handle on first use, so that every DataLoader worker has its own (GDAL
    handles must not cross a fork).

    Args:
        path (`str`): the raster.
        indexes (`list[int]`): 1-based bands to read, in the model's order.
        nodata (`float`, *optional*): a raw value that marks no-data in any band, on top of the file's own masks.
    """

    def __init__(self, path: str, indexes: list[int], nodata: float | None = None):
        self.path, self.indexes, self.nodata = path, list(indexes), nodata
        self._source = None

    def read(self, top: int, left: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw bands (C, height, width) float32 and validity (height, width) bool of a window; pixels beyond the
        file's edge are invalid (0)."""
        return self._read(top, left, height, width, with_bands=True)

    def read_valid(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        """Validity (height, width) bool of a window, reading the bands only when NaN or `nodata` must be checked."""
        return self._read(top, left, height, width, with_bands=False)[1]

    def _read(self, top: int, left: int, height: int, width: int, with_bands: bool):
        rasterio = _rasterio()
        if self._source is None:
            with raster_environment():
                self._source = rasterio.open(self.path)
        source = self._source
        with_bands = with_bands or self.nodata is not None or np.issubdtype(np.dtype(source.dtypes[0]), np.floating)
        bands = np.zeros((len(self.indexes), height, width), dtype=np.float32) if with_bands else None
        valid = np.zeros((height, width), dtype=bool)
        inside_height, inside_width = min(height, source.height - top), min(width, source.width - left)
        if inside_height > 0 and inside_width > 0:
            window = rasterio.windows.Window(left, top, inside_width, inside_height)
            with raster_environment():
                inside = source.read_masks(self.indexes, window=window).all(axis=0)
                data = source.read(self.indexes, window=window, out_dtype=np.float32) if with_bands else None
            if with_bands:
                inside &= np.isfinite(data).all(axis=0)
                if self.nodata is not None:
                    inside &= ~(np.isnan(data) if np.isnan(self.nodata) else data == self.nodata).any(axis=0)
                bands[:, :inside_height, :inside_width] = np.where(inside, data, 0)
            valid[:inside_height, :inside_width] = inside
        return bands, valid

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

    def __getstate__(self):  # a reader crosses to DataLoader workers without its handle
        return {**self.__dict__, "_source": None}


@dataclass
class OutputSpec:
    """One output raster of a scene.

    Args:
        path (`Path`): final path.
        count (`int`): bands.
        dtype (`str`): numpy dtype.
        nodata (`float`): nodata value.
        scale (`int`): pixels of the input per pixel of this output (the patch size for token-grid maps).
        resampling (`str`): overview resampling (`"mode"` for categories, `"average"` for quantities).
        descriptions (`list[str]`, *optional*): band descriptions.
        tags (`dict[str, str]`, *optional*): dataset tags.
        colormap (`dict[int, tuple]`, *optional*): colour table of band 1.
    """

    path: Path
    count: int
    dtype: str
    nodata: float
    scale: int = 1
    resampling: str = "mode"
    descriptions: list | None = None
    tags: dict | None = None
    colormap: dict | None = None

    @property
    def partial_path(self) -> Path:
        return self.path.with_name(self.path.name + ".partial")


class SceneWriter:
    """Output rasters of one scene, written strip by strip as tiled compressed GeoTIFFs under `.partial` names;
    `finish()` converts them to COGs (or keeps them) and renames them, `abort()` leaves the `.partial` files.

    Args:
        info (`SceneInfo`): the input raster (size, CRS, transform).
        outputs (`dict[str, OutputSpec]`): the rasters by name.
        compress (`str`): GDAL compression (`"zstd"`, `"deflate"`, `"lzw"`).
        cog (`bool`): finish as Cloud-Optimized GeoTIFFs with overviews.
    """

    def __init__(self, info: SceneInfo, outputs: dict, compress: str = "zstd", cog: bool = True):
        rasterio = _rasterio()
        self.outputs, self.compress, self.cog = outputs, compress, cog
        self.datasets = {}
        with raster_environment():
            for name, spec in outputs.items():
                height, width = -(-info.height // spec.scale), -(-info.width // spec.scale)
                profile = dict(
                    driver="GTiff", height=height, width=width, count=spec.count, dtype=spec.dtype, nodata=spec.nodata,
                    tiled=True, blockxsize=BLOCK_SIZE, blockysize=BLOCK_SIZE, compress=compress, bigtiff="IF_SAFER",
                )
                if info.georeferenced:
                    profile.update(crs=info.crs, transform=info.transform @ info.transform.scale(spec.scale))
                dataset = rasterio.open(spec.partial_path, "w", **profile)
                for index, description in enumerate(spec.descriptions or [], start=1):
                    dataset.set_band_description(index, description)
                if spec.tags:
                    dataset.update_tags(**spec.tags)
                if spec.colormap:
                    dataset.write_colormap(1, spec.colormap)
                self.datasets[name] = dataset

    def write(self, name: str, array: np.ndarray, row: int, column: int = 0) -> None:
        """Writes (count, n, w) values of output `name` at output pixel (row, column)."""
        window = _rasterio().windows.Window(column, row, array.shape[-1], array.shape[-2])
        with raster_environment():
            self.datasets[name].write(array.astype(self.outputs[name].dtype), window=window)

    def finish(self) -> dict[str, str]:
        """Closes, converts and renames every output; returns their final paths by name."""
        rasterio = _rasterio()
        self.close()
        for spec in self.outputs.values():
            if self.cog:
                converting = spec.path.with_name(spec.path.name + ".cog.partial")
                with raster_environment():
                    rasterio.shutil.copy(
                        spec.partial_path, converting, driver="COG", compress=self.compress.upper(),
                        overview_resampling=spec.resampling.upper(), blocksize=BLOCK_SIZE, bigtiff="IF_SAFER",
                    )
                os.replace(converting, spec.path)
                spec.partial_path.unlink()
            else:
                os.replace(spec.partial_path, spec.path)
        return {name: str(spec.path) for name, spec in self.outputs.items()}

    def close(self) -> None:
        for dataset in self.datasets.values():
            dataset.close()
        self.datasets = {}


def write_json_atomically(path: Path, content: dict) -> None:
    """Writes JSON under a `.partial` name, then renames it: a reader never sees half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)


def library_versions() -> dict[str, str]:
    rasterio = _rasterio()
    return {"rasterio": rasterio.__version__, "gdal": rasterio.__gdal_version__}


__all__ = ["OutputSpec", "SceneInfo", "SceneWriter", "WindowReader", "read_scene_info", "write_json_atomically"]
