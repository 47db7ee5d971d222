"""Shared steps of the dataset builders of this package (each `<benchmark>.py` module beside this one imports it).

A builder lists its inputs as `Item`s per split, says how one item becomes `Tile`s (reading, checks, label
remapping, tiling: the helpers below), and calls `build_dataset`, which writes the dataset of
`modeling_spectralmoe.data.schema` in this layout:

    OUT/
      data/<split>/<NNNNN>-<hash>.parquet   shards: one group of input items each, written then renamed into place
      .build/<split>/<same name>.json       per-shard state: rows, domains, band statistics (train split)
      spectral_metadata.json                `SpectralMetadata`
      README.md                             dataset card; its YAML header maps the parquet files to splits

The folder is what `load_spectral_dataset(OUT)` reads and what `--push-to-hub` uploads (minus `.build/`). Memory is
bounded by one input item plus one parquet row group. A rerun skips shards that are complete (parquet and state both
present) and removes shards that the current inputs no longer produce.
"""

import argparse
import fnmatch
import functools
import hashlib
import json
import os
import re
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image
from tqdm.auto import tqdm

from ..schema import (
    IGNORE_INDEX,
    METADATA_FILE,
    BandStatistics,
    SpectralMetadata,
    segmentation_features,
    split_sort_key,
)


SPLITS_DIR = Path(__file__).resolve().parent / "splits"
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
ROW_GROUP_BYTES = 64 * 2**20
SPLIT_NAME = re.compile(r"^(train|validation|target(_\w+)?)$")
# The smallest tile SpectralMoE takes: the Mask2Former pixel decoder's stride-32 map needs 2 x 2 positions for its
# group norms (one image per batch), so smaller images end in an interpolation or group-norm error.
MIN_TILE_SIZE = 64


def log(message: str) -> None:
    """A line on stderr that does not break the progress bars."""
    tqdm.write(message, file=sys.stderr)


def exit_on_input_error(main: Callable) -> Callable:
    """A builder's `main` that ends with one line `error: <message>` (each names the file and the problem) instead of
    a traceback when the inputs or options are wrong."""

    @functools.wraps(main)
    def run(argv=None):
        try:
            return main(argv)
        except (ValueError, OSError, yaml.YAMLError) as error:
            sys.exit(f"error: {error}")

    return run


# ---- reading ---------------------------------------------------------------------------------------------------


def _rasterio():
    try:
        import rasterio
    except ImportError as error:
        raise ImportError("Reading GeoTIFF needs rasterio: pip install 'spectralmoe[geo]'.") from error
    # Tiles cut for machine learning often carry no georeference; that is no reason to warn for every file.
    warnings.filterwarnings("ignore", category=rasterio.errors.NotGeoreferencedWarning)
    return rasterio


def read_raster(path: Path) -> np.ndarray:
    """All bands of an image file as (C, H, W) in the file's dtype: GeoTIFF through rasterio, PNG/JPEG through
    pillow (a palette PNG gives its index values)."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        with _rasterio().open(path) as source:
            return source.read()
    with Image.open(path) as image:
        array = np.asarray(image)
    return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)


def read_raster_validity(path: Path) -> tuple[np.ndarray, np.ndarray, float | None]:
    """`(image (C, H, W), valid (H, W), nodata)` of an image file: `valid` is False where any band is masked by the
    file itself (its nodata tag, an internal or sidecar mask, an alpha band: GDAL's per-band masks); `nodata` is the
    tag's value (`None` without one, and for PNG/JPEG, whose pixels are all valid)."""
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        image = read_raster(path)
        return image, np.ones(image.shape[-2:], dtype=bool), None
    with _rasterio().open(path) as source:
        image, valid, nodata = source.read(), (source.read_masks() > 0).all(axis=0), source.nodata
    if nodata is not None:  # GDAL's masks follow an internal mask instead of the tag where the file has both
        valid &= ~(np.isnan(image) if np.isnan(nodata) else image == nodata).any(axis=0)
    return image, valid, nodata


def read_image(path: Path, band_names: list[str], keep: list[int] | None = None, nodata=None) -> np.ndarray:
    """An image checked against the release's band list (`band_names`, in file order) and for NaN, then reduced to the
    bands `keep` (indices into the file's bands; all when None)."""
    image = read_raster(path)
    check_band_count(image, len(band_names), path, band_names)
    check_finite(image, path, nodata)
    return image if keep is None else image[keep]


def read_index_label(path: Path) -> np.ndarray:
    """A single-band label file of class codes as (H, W)."""
    label = read_raster(path)
    if label.shape[0] != 1:
        raise ValueError(f"{path}: expected a single-band index label, found {label.shape[0]} bands.")
    return label[0]


def read_colour_label(path: Path) -> np.ndarray:
    """A colour-coded label file as (3, H, W) (an alpha band is dropped)."""
    label = read_raster(path)
    if label.shape[0] not in (3, 4):
        raise ValueError(f"{path}: expected a 3-band RGB colour label, found {label.shape[0]} bands.")
    return label[:3]


# ---- checks ----------------------------------------------------------------------------------------------------


def check_band_count(image: np.ndarray, expected: int, path: Path, band_names: list[str] | None = None) -> None:
    """Refuse an image whose band count is not the release's."""
    if image.shape[0] != expected:
        names = f" ({', '.join(band_names)})" if band_names else ""
        raise ValueError(f"{path}: expected {expected} bands{names}, found {image.shape[0]} (array shape "
                         f"{tuple(image.shape)}).")


def check_finite(image: np.ndarray, path: Path, nodata=None) -> None:
    """Refuse NaN / infinite values, except pixels whose bands are all NaN when the no-data value is NaN."""
    if not np.issubdtype(image.dtype, np.floating):
        return
    bad = ~np.isfinite(image)
    if nodata is not None and np.isnan(nodata):
        bad &= ~np.isnan(image).all(axis=0, keepdims=True)
    if bad.any():
        raise ValueError(f"{path}: expected finite values, found {int(bad.sum())} NaN/inf values; set them to a "
                         f"no-data value (and declare it) or fix the file.")


def check_same_size(image: np.ndarray, label: np.ndarray, image_path: Path, label_path: Path) -> None:
    if image.shape[-2:] != label.shape[-2:]:
        raise ValueError(f"{label_path}: expected the size of {image_path.name} ({image.shape[-2]} x "
                         f"{image.shape[-1]}), found {label.shape[-2]} x {label.shape[-1]}.")


def read_index_pair(item: "Item", band_names: list[str], mapping: dict[int, int], keep: list[int] | None = None,
                    nodata=None) -> tuple[np.ndarray, np.ndarray]:
    """An item's checked image (bands `keep`) and its index label remapped to classes (uint8, 255 = ignore)."""
    image = read_image(item.image, band_names, keep, nodata)
    label = read_index_label(item.label)
    check_same_size(image, label, item.image, item.label)
    return image, remap_index_label(label, mapping, item.label)


# ---- labels ----------------------------------------------------------------------------------------------------


def shifted_codes(num_classes: int, ignored: Iterable[int] = ()) -> dict[int, int]:
    """The usual index-label protocol: code 0 -> ignore, codes 1..K -> classes 0..K-1, `ignored` codes -> ignore."""
    mapping = {0: IGNORE_INDEX, **{code: code - 1 for code in range(1, num_classes + 1)}}
    mapping.update({code: IGNORE_INDEX for code in ignored})
    return mapping


def remap_index_label(label: np.ndarray, mapping: dict[int, int], path: Path) -> np.ndarray:
    """Codes -> class indices (uint8, 255 = ignore) through a lookup table; codes outside `mapping` are refused."""
    if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"{path}: expected integer label codes, found dtype {label.dtype}.")
    if label.dtype.itemsize <= 2 and label.dtype.kind == "u":  # direct lookup over every possible code
        table = np.full(max(max(mapping) + 1, np.iinfo(label.dtype).max + 1), -1, dtype=np.int16)
        table[list(mapping)] = list(mapping.values())
        out = table[label]
        unknown = out < 0
    else:
        table = np.full(max(mapping) + 1, -1, dtype=np.int16)
        table[list(mapping)] = list(mapping.values())
        in_range = (label >= 0) & (label < len(table))
        out = table[np.where(in_range, label, 0)]
        unknown = ~in_range | (out < 0)
    if unknown.any():
        raise ValueError(f"{path}: expected label codes {sorted(mapping)}, found unexpected codes "
                         f"{np.unique(label[unknown]).tolist()[:20]}.")
    return out.astype(np.uint8)


def decode_palette(colour: np.ndarray, palette: dict[tuple[int, int, int], int], path: Path,
                   unknown_as_ignore: bool = False) -> np.ndarray:
    """A (3, H, W) colour label -> (H, W) uint8 class indices through `palette` (RGB -> class or 255). Colours not in
    the palette are refused, or mapped to ignore with `unknown_as_ignore` (their count is reported)."""
    packed = (colour[0].astype(np.int32) << 16) | (colour[1].astype(np.int32) << 8) | colour[2].astype(np.int32)
    keys = np.array(sorted((r << 16) | (g << 8) | b for r, g, b in palette), dtype=np.int32)
    values = np.array([palette[((k >> 16) & 255, (k >> 8) & 255, k & 255)] for k in keys], dtype=np.uint8)
    position = np.clip(np.searchsorted(keys, packed), 0, len(keys) - 1)
    known = keys[position] == packed
    out = np.where(known, values[position], IGNORE_INDEX).astype(np.uint8)
    if not known.all():
        found = [((k >> 16) & 255, (k >> 8) & 255, k & 255) for k in np.unique(packed[~known])[:10].tolist()]
        if not unknown_as_ignore:
            raise ValueError(f"{path}: expected only the palette colours {sorted(palette)}, found {int((~known).sum())}"
                             f" pixels of other colours, e.g. {found} (use --unknown-colours ignore to map them to "
                             f"{IGNORE_INDEX}).")
        log(f"{path}: {int((~known).sum())} pixels of non-palette colours {found} -> {IGNORE_INDEX}")
    return out


# ---- tiling ----------------------------------------------------------------------------------------------------

GF2_SCENE_SHAPE = (6908, 7300)  # rows, columns of a Five-Billion-Pixels GF-2 scene, padding included
GF2_KEEP = (slice(54, 6854), slice(60, 7260))  # rows 54..6853, columns 60..7259 (arXiv 2603.13352)


@dataclass
class Tile:
    """One example of the dataset; `valid` (H, W) is False where the tile was padded (left out of the statistics)."""

    pixel_values: np.ndarray
    label: np.ndarray
    image_id: str
    domain: str
    valid: np.ndarray | None = None


def remove_gf2_padding(image: np.ndarray, label: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Crop a GF-2 scene (C, 6908, 7300) and its label to the 6800 x 7200 area without padding."""
    if image.shape[-2:] != GF2_SCENE_SHAPE:
        raise ValueError(f"{path}: expected a GF-2 scene of {GF2_SCENE_SHAPE[0]} rows x {GF2_SCENE_SHAPE[1]} columns, "
                         f"found {image.shape[-2]} x {image.shape[-1]}.")
    return image[(slice(None), *GF2_KEEP)], label[GF2_KEEP]


def extract_window(image: np.ndarray, label: np.ndarray, top: int, left: int, height: int, width: int,
                   pad_value=0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (height, width) window at (top, left), padded where it leaves the array (image `pad_value`, label 255).
    Returns (image (C, h, w), label (h, w), valid (h, w))."""
    rows, cols = image.shape[-2:]
    out_image = np.full((image.shape[0], height, width), pad_value, dtype=image.dtype)
    out_label = np.full((height, width), IGNORE_INDEX, dtype=np.uint8)
    valid = np.zeros((height, width), dtype=bool)
    r0, r1, c0, c1 = max(top, 0), min(top + height, rows), max(left, 0), min(left + width, cols)
    if r0 < r1 and c0 < c1:
        target = (slice(r0 - top, r1 - top), slice(c0 - left, c1 - left))
        out_image[(slice(None), *target)] = image[:, r0:r1, c0:c1]
        out_label[target] = label[r0:r1, c0:c1]
        valid[target] = True
    return out_image, out_label, valid


def padded_grid(rows: int, cols: int, size: int) -> list[tuple[int, int]]:
    """Top-left corners of non-overlapping size x size tiles covering the array; edge tiles stick out (padded)."""
    return [(top, left) for top in range(0, rows, size) for left in range(0, cols, size)]


def sliding_grid(rows: int, cols: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of size x size windows every `stride` pixels; the last row/column of windows is shifted back to
    end at the border (no padding unless the array is smaller than one window)."""

    def starts(length: int) -> list[int]:
        if length <= size:
            return [0]
        count = -(-(length - size) // stride) + 1
        return sorted({min(i * stride, length - size) for i in range(count)})

    return [(top, left) for top in starts(rows) for left in starts(cols)]


def labelled_window(label: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the size x size window centred on the bounding box of the labelled (non-ignore) pixels,
    shifted inside the array where the array is large enough."""
    rows, cols = np.nonzero(label != IGNORE_INDEX)
    if rows.size == 0:
        rows, cols = np.array([0, label.shape[0] - 1]), np.array([0, label.shape[1] - 1])

    def start(low: int, high: int, length: int) -> int:
        begin = (low + high + 1) // 2 - size // 2
        return max(0, min(begin, length - size)) if length >= size else begin

    return start(rows.min(), rows.max(), label.shape[0]), start(cols.min(), cols.max(), label.shape[1])


def cut_tiles(image: np.ndarray, label: np.ndarray, corners: list[tuple[int, int]], size: int, image_id: str,
              domain: str, pad_value=0) -> Iterator[Tile]:
    """Tiles at the given corners; a single tile at (0, 0) (the array fits in one tile) keeps `image_id`, others get
    `_y<top>_x<left>`."""
    whole = corners == [(0, 0)]
    for top, left in corners:
        pixels, labels, valid = extract_window(image, label, top, left, size, size, pad_value)
        name = image_id if whole else f"{image_id}_y{top}_x{left}"
        yield Tile(pixels, labels, name, domain, None if valid.all() else valid)


def labelled_window_tiles(image, label, window, size, image_id, domain, pad_value=0) -> Iterator[Tile]:
    """The window x window area centred on the labelled pixels' bounding box, tiled to size x size (the protocol of
    the Five-Billion-Pixels target images: 1024 window, 512 tiles); ids carry the tiles' corners in the image."""
    top, left = labelled_window(label, window)
    corners = [(top + dy, left + dx) for dy in range(0, window, size) for dx in range(0, window, size)]
    return cut_tiles(image, label, corners, size, image_id, domain, pad_value)


def padded_tiles(image, label, size, image_id, domain, pad_value=0) -> Iterator[Tile]:
    """Non-overlapping tiles with padded edge tiles (the GF-2 protocol; also the generic one)."""
    return cut_tiles(image, label, padded_grid(*image.shape[-2:], size), size, image_id, domain, pad_value)


def sliding_tiles(image, label, size, stride, image_id, domain, pad_value=0) -> Iterator[Tile]:
    """Overlapping crops every `stride` pixels (the Potsdam / Vaihingen protocol: 512 crops, stride 256)."""
    return cut_tiles(image, label, sliding_grid(*image.shape[-2:], size, stride), size, image_id, domain, pad_value)


# ---- inputs ----------------------------------------------------------------------------------------------------


@dataclass
class Item:
    """One unit of input: an image and its label file (what `decode` turns into tiles)."""

    key: str
    image: Path
    label: Path
    domain: str
    extra: dict = field(default_factory=dict)


def natural_key(text: str) -> list:
    """Sort key that orders "area2" before "area10"."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def list_files(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES, pattern: str = "*") -> list[Path]:
    """Files of `folder` matching `pattern` with one of `suffixes` (case-insensitive), naturally sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"expected a folder {folder}, found none.")
    files = [p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in suffixes]
    return sorted(files, key=lambda p: natural_key(str(p.relative_to(folder))))


def pair_files(images: list[Path], labels: list[Path], image_key: Callable[[Path], str] = lambda p: p.stem,
               label_key: Callable[[Path], str] = lambda p: p.stem, prefix_match: bool = False,
               missing: str = "error") -> list[tuple[str, Path, Path]]:
    """(key, image, label) for each image whose label has the same key; with `prefix_match`, a label key may also be
    the image key followed by "_" or "-" and a suffix (e.g. `..._24label`). Images without label: `missing="error"`
    refuses, `"skip"` reports and leaves them out. Labels without image are ignored."""
    by_key: dict[str, Path] = {}
    for path in labels:
        by_key.setdefault(label_key(path), path)
    pairs, unmatched = [], []
    for image in images:
        key = image_key(image)
        label = by_key.get(key)
        if label is None and prefix_match:
            candidates = [k for k in by_key if k.startswith(key) and k[len(key):len(key) + 1] in ("_", "-")]
            if len(candidates) > 1:
                raise ValueError(f"{image}: several label files could belong to it: {sorted(candidates)}.")
            label = by_key[candidates[0]] if candidates else None
        if label is None:
            unmatched.append(image)
        else:
            pairs.append((key, image, label))
    if unmatched and missing == "error":
        raise FileNotFoundError(f"expected a label for every image, found none for {len(unmatched)} images, e.g. "
                                f"{[str(p) for p in unmatched[:3]]}.")
    if unmatched:
        log(f"skipping {len(unmatched)} images without label, e.g. {unmatched[0].name}")
    return pairs


# ---- split files -----------------------------------------------------------------------------------------------


def load_splits_file(path: Path) -> dict:
    """A YAML/JSON split file (format in `splits/README.md`): split name -> entries, plus optional `domains`."""
    with open(path) as handle:
        spec = yaml.safe_load(handle)
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: expected a mapping of split names to lists, found {type(spec).__name__}.")
    for split in spec:
        if split not in ("domains", "description") and not SPLIT_NAME.match(split):
            raise ValueError(f"{path}: expected split names train, validation, target or target_<name>, found "
                             f"{split!r}.")
    return spec


def _matches(entry, key: str, domains: dict) -> bool:
    if isinstance(entry, str) and entry in domains:
        return any(fnmatch.fnmatchcase(key, pattern) for pattern in domains[entry])
    return isinstance(entry, str) and entry != "*" and fnmatch.fnmatchcase(key, entry)


def assign_splits(keys: list[str], spec: dict) -> dict[str, str]:
    """key -> split name. Entries of a split: an id glob pattern, a name from `domains` (its ids), `{every_nth: n,
    offset: k}` (every n-th of the keys no pattern claimed, in natural order), or "*" (all keys left). A key claimed
    by two splits is refused; keys no split claims are reported and left out."""
    domains = spec.get("domains") or {}
    splits = {name: entries for name, entries in spec.items() if name not in ("domains", "description")}
    assignment: dict[str, str] = {}
    for key in keys:
        claims = [name for name, entries in splits.items() if any(_matches(e, key, domains) for e in entries)]
        if len(claims) > 1:
            raise ValueError(f"{key!r} is claimed by several splits: {claims}.")
        if claims:
            assignment[key] = claims[0]
    for name, entries in splits.items():
        for entry in entries:
            if isinstance(entry, dict):
                left = sorted((k for k in keys if k not in assignment), key=natural_key)
                step, offset = int(entry["every_nth"]), int(entry.get("offset", 0))
                assignment.update({k: name for k in left[offset::step]})
    for name, entries in splits.items():
        if "*" in entries:
            assignment.update({k: name for k in keys if k not in assignment})
    unused = [k for k in keys if k not in assignment]
    if unused:
        log(f"{len(unused)} of {len(keys)} scenes/regions belong to no split and are left out, e.g. {unused[:5]}")
    return assignment


def split_items(items: list["Item"], spec: dict, key: Callable[["Item"], str] = lambda item: item.key
                ) -> dict[str, list["Item"]]:
    """Group items by the split that the split file assigns to `key(item)` (e.g. the item's scene or region)."""
    assignment = assign_splits(sorted({key(item) for item in items}, key=natural_key), spec)
    splits: dict[str, list[Item]] = {}
    for item in items:
        if key(item) in assignment:
            splits.setdefault(assignment[key(item)], []).append(item)
    return splits


def domain_of(key: str, spec: dict, default: str) -> str:
    """The `domains` entry of the split file that lists `key`, else `default`."""
    for name, patterns in (spec.get("domains") or {}).items():
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns):
            return name
    return default


# ---- writing ---------------------------------------------------------------------------------------------------


@dataclass
class DatasetInfo:
    """What a builder declares about its dataset (the statistics are computed while writing)."""

    name: str
    band_names: list[str]
    id2label: dict[int, str]
    dtype: str
    tile_size: int
    wavelengths: list[float] | None = None
    nodata: float | None = None
    domain_bands: dict[str, dict] = field(default_factory=dict)
    description: str = ""

    @property
    def features(self):
        return self.features_of_bands(len(self.band_names))

    def features_of_bands(self, num_bands: int):
        return segmentation_features(num_bands, self.tile_size, self.tile_size, self.dtype)

    def band_count(self, domain: str) -> int:
        """Bands of a domain: its `domain_bands` entry where present (it may have another count), else the dataset's."""
        return len(self.domain_bands.get(domain, {}).get("band_names", self.band_names))


def _list_storage(values: np.ndarray) -> pa.Array:
    """The nested-list storage of an ArrayXD column from a (n, *shape) numpy array, without Python objects."""
    array = pa.array(np.ascontiguousarray(values).reshape(-1))
    for length in reversed(values.shape[1:]):
        count = len(array) // length
        array = pa.ListArray.from_arrays(pa.array(np.arange(0, (count + 1) * length, length, dtype=np.int32)), array)
    return array


def tiles_to_table(tiles: list[Tile], schema: pa.Schema) -> pa.Table:
    """An arrow table in the schema of `segmentation_features` from tiles already checked against it."""
    columns = [
        pa.ExtensionArray.from_storage(schema.field("pixel_values").type,
                                       _list_storage(np.stack([t.pixel_values for t in tiles]))),
        pa.ExtensionArray.from_storage(schema.field("label").type, _list_storage(np.stack([t.label for t in tiles]))),
        pa.array([t.domain for t in tiles], pa.string()),
        pa.array([t.image_id for t in tiles], pa.string()),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


class ShardWriter:
    """Writes tiles into one parquet shard in row groups of about 64 MiB; the file appears under its final name only
    once `close()` has written everything (and the caller its state), so an interrupted shard is redone."""

    def __init__(self, path: Path, info: DatasetInfo, statistics: BandStatistics | None, num_bands: int):
        self.path, self.info, self.statistics, self.num_bands = path, info, statistics, num_bands
        self.features = info.features_of_bands(num_bands)
        self.schema = self.features.arrow_schema
        self.temporary = path.with_suffix(".parquet.tmp")
        tile_bytes = np.dtype(info.dtype).itemsize * num_bands * info.tile_size**2
        self.rows_per_group = max(1, ROW_GROUP_BYTES // tile_bytes)
        # Nested-list columns carry repetition levels per value; without dictionary pages and min/max statistics and
        # with zstd, writing is several times faster than the defaults and reading faster, at a similar size.
        self.writer = pq.ParquetWriter(self.temporary, self.schema, compression="zstd", use_dictionary=False,
                                       write_statistics=False)
        self.buffer: list[Tile] = []
        self.rows, self.domains = 0, set()

    def write(self, tile: Tile) -> None:
        self._check(tile)
        if self.statistics is not None:
            self.statistics.update(tile.pixel_values, tile.valid)
        self.buffer.append(tile)
        self.rows += 1
        self.domains.add(tile.domain)
        if len(self.buffer) >= self.rows_per_group:
            self._flush()

    def _check(self, tile: Tile) -> None:
        expected = (self.num_bands, self.info.tile_size, self.info.tile_size)
        found = tile.pixel_values
        if found.shape != expected or found.dtype != np.dtype(self.info.dtype):
            raise ValueError(f"{tile.image_id}: expected pixel_values of shape {expected} and dtype {self.info.dtype}, "
                             f"found shape {tuple(found.shape)} and dtype {found.dtype}.")
        if tile.label.shape != expected[1:] or tile.label.dtype != np.uint8:
            raise ValueError(f"{tile.image_id}: expected a uint8 label of shape {expected[1:]}, found "
                             f"{tuple(tile.label.shape)} {tile.label.dtype}.")

    def _flush(self) -> None:
        if self.buffer:
            self.writer.write_table(tiles_to_table(self.buffer, self.schema))
            self.buffer = []

    def close(self) -> None:
        self._flush()
        self.writer.close()

    def commit(self) -> None:
        os.replace(self.temporary, self.path)

    def abort(self) -> None:
        self.writer.close()
        self.temporary.unlink(missing_ok=True)


def _shard_name(index: int, items: list[Item], fingerprint: str) -> str:
    """Position and a hash of the build's fingerprint and the items (keys, domains): a shard written with other
    options or inputs gets another name, so a rerun never mistakes it for a finished one."""
    text = "\n".join([fingerprint, *(f"{item.key}\t{item.domain}" for item in items)])
    return f"{index:05d}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def build_fingerprint(info: DatasetInfo, options: dict) -> str:
    """What, besides the inputs, decides a shard's content: the dataset declaration and the builder's options."""
    declaration = {k: v for k, v in vars(info).items() if k not in ("description", "domain_bands")}
    return json.dumps({"info": declaration, "options": options}, sort_keys=True, default=str)


def _chunks(items: list[Item], size: int) -> list[list[Item]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _check_existing_features(output_dir: Path, info: DatasetInfo, split: str, num_bands: int) -> None:
    """Refuse to mix shards of different tile size or dtype in one output folder, or of different band counts in
    one split (other splits may hold other band sets)."""
    from datasets import Features

    expected = info.features_of_bands(num_bands)["pixel_values"]
    for existing in sorted((output_dir / "data").glob("*/*.parquet")):
        found = Features.from_arrow_schema(pq.read_schema(existing))["pixel_values"]
        same_split = existing.parent.name == split
        if (found.dtype, found.shape[1:]) != (expected.dtype, expected.shape[1:]) or (
                same_split and found.shape != expected.shape):
            raise ValueError(f"{output_dir} already holds data with features {found} (in {existing.parent.name}/"
                             f"{existing.name}); this build expected {expected}. Use another --output-dir.")


def write_split(output_dir: Path, split: str, items: list[Item], decode: Callable[[Item], Iterable[Tile]],
                info: DatasetInfo, items_per_shard: int, fingerprint: str) -> None:
    """Write one split shard by shard, skipping complete shards and removing those no longer produced."""
    data_dir, state_dir = output_dir / "data" / split, output_dir / ".build" / split
    data_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    num_bands = info.band_count(items[0].domain)
    names = []
    with tqdm(total=len(items), desc=split, unit="item", dynamic_ncols=True) as bar:
        for index, chunk in enumerate(_chunks(items, items_per_shard)):
            name = _shard_name(index, chunk, fingerprint)
            names.append(name)
            if not ((data_dir / f"{name}.parquet").is_file() and (state_dir / f"{name}.json").is_file()):
                _write_shard(data_dir / f"{name}.parquet", state_dir / f"{name}.json", chunk, decode, info,
                             split == "train", num_bands, bar)
            else:
                bar.update(len(chunk))
    _remove_stale(data_dir, state_dir, set(names))


def _write_shard(path: Path, state_path: Path, items: list[Item], decode, info: DatasetInfo, with_statistics: bool,
                 num_bands: int, bar) -> None:
    statistics = BandStatistics(len(info.band_names), info.nodata) if with_statistics else None
    writer = ShardWriter(path, info, statistics, num_bands)
    try:
        for item in items:
            for tile in decode(item):
                writer.write(tile)
            bar.update(1)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    state = {"rows": writer.rows, "domains": sorted(writer.domains), "items": [item.key for item in items],
             "statistics": None if statistics is None else statistics.to_dict()}
    state_path.write_text(json.dumps(state))
    writer.commit()


def _remove_stale(data_dir: Path, state_dir: Path, keep: set[str]) -> None:
    for path in sorted(data_dir.glob("*.parquet*")):
        if path.name.split(".")[0] not in keep or path.name.endswith(".tmp"):
            log(f"removing {path} (not produced by this build)")
            path.unlink()
    for path in sorted(state_dir.glob("*.json")):
        if path.stem not in keep:
            path.unlink()


def remove_split(output_dir: Path, split: str) -> None:
    """Delete a split's shards and state (a benchmark rebuilt with other options no longer has it)."""
    log(f"removing split {split!r} (not produced by this build)")
    shutil.rmtree(output_dir / "data" / split, ignore_errors=True)
    shutil.rmtree(output_dir / ".build" / split, ignore_errors=True)


def split_states(output_dir: Path) -> dict[str, list[dict]]:
    """The state of every complete shard on disk, per split; a split without a complete shard (its first build was
    interrupted) is not there yet."""
    states = {}
    for data_dir in sorted((output_dir / "data").glob("*"), key=lambda p: split_sort_key(p.name)):
        shards = sorted(data_dir.glob("*.parquet"))
        if shards:
            states[data_dir.name] = [
                json.loads((output_dir / ".build" / data_dir.name / f"{p.stem}.json").read_text()) for p in shards
            ]
    return states


def source_statistics(states: list[dict], info: DatasetInfo) -> BandStatistics:
    """Merge the per-shard statistics of the source split."""
    total = BandStatistics(len(info.band_names), info.nodata)
    for state in states:
        total.merge(BandStatistics.from_dict(state["statistics"]))
    return total


def shard_size(items_per_shard: int | dict[str, int], split: str) -> int:
    """Items per shard of a split: one number for all, or per split name, where `"target"` covers `target_*`."""
    if isinstance(items_per_shard, int):
        return items_per_shard
    return items_per_shard.get(split, items_per_shard.get(split.split("_")[0], 1))


def build_dataset(output_dir: Path, info: DatasetInfo, splits: dict[str, list[Item]],
                  decode: Callable[[Item], Iterable[Tile]], items_per_shard: int | dict[str, int],
                  exclusive: bool = True, previous: SpectralMetadata | None = None,
                  options: dict | None = None) -> SpectralMetadata:
    """Write `splits` (split name -> items), then the metadata and the dataset card for everything on disk.

    `exclusive`: the output folder belongs to this build, splits it does not produce are removed (benchmark
    builders); otherwise other splits are kept (`build_folder.py` appends domains). Statistics come from the `train`
    split on disk, or from `previous` metadata when there is none. `options`: the builder's options that change the
    tiles (label kind, label map...); with `info`, they enter the shard names (see `_shard_name`).
    """
    output_dir = Path(output_dir)
    for split, items in splits.items():
        if not SPLIT_NAME.match(split):
            raise ValueError(f"expected split names train, validation, target or target_<name>, found {split!r}.")
        if not items:
            raise ValueError(f"split {split!r} has no input files; check --raw-dir and the split lists.")
        _check_existing_features(output_dir, info, split, info.band_count(items[0].domain))
        write_split(output_dir, split, items, decode, info, shard_size(items_per_shard, split),
                    build_fingerprint(info, options or {}))
    if exclusive:
        for split in set(split_states(output_dir)) - set(splits):
            remove_split(output_dir, split)
    metadata = write_metadata(output_dir, info, previous)
    return metadata


def write_metadata(output_dir: Path, info: DatasetInfo, previous: SpectralMetadata | None) -> SpectralMetadata:
    """`spectral_metadata.json` and `README.md` for the splits on disk."""
    states = split_states(output_dir)
    mean = std = None
    if "train" in states:
        statistics = source_statistics(states["train"], info)
        mean, std = statistics.mean, statistics.std
    elif previous is not None:
        mean, std = previous.mean, previous.std
    metadata = SpectralMetadata(
        name=info.name, band_names=info.band_names, mean=mean, std=std, id2label=info.id2label,
        wavelengths=info.wavelengths, source_split="train",
        target_splits=[s for s in states if s.startswith("target")], nodata=info.nodata,
        domain_bands=info.domain_bands, description=info.description,
    )
    metadata.save(output_dir)
    (output_dir / "README.md").write_text(dataset_card(metadata, states, info))
    return metadata


# ---- dataset card ----------------------------------------------------------------------------------------------


def dataset_card(metadata: SpectralMetadata, states: dict[str, list[dict]], info: DatasetInfo) -> str:
    """README.md: YAML header (parquet files per split, for `load_dataset` and the Hub) and a readable summary."""
    header = {
        "configs": [{"config_name": "default",
                     "data_files": [{"split": s, "path": f"data/{s}/*.parquet"} for s in states]}],
        "task_categories": ["image-segmentation"],
        "tags": ["remote-sensing", "semantic-segmentation", "domain-generalization", "spectralmoe"],
    }
    wavelengths = metadata.wavelengths or [None] * len(metadata.band_names)
    mean = metadata.mean or [None] * len(metadata.band_names)
    std = metadata.std or [None] * len(metadata.band_names)
    bands = "\n".join(f"| {i} | {n} | {w if w is not None else '-'} | {_number(m)} | {_number(s)} |"
                      for i, (n, w, m, s) in enumerate(zip(metadata.band_names, wavelengths, mean, std)))
    classes = "\n".join(f"| {i} | {name} |" for i, name in metadata.id2label.items())
    splits = "\n".join(
        f"| {s} | {sum(x['rows'] for x in shards)} | {len(shards)} | "
        f"{', '.join(sorted({d for x in shards for d in x['domains']}))} |" for s, shards in states.items())
    overrides = "".join(f"\nDomain `{d}` has bands {b.get('band_names')} (wavelengths {b.get('wavelengths')})."
                        for d, b in metadata.domain_bands.items())
    return f"""---
{yaml.safe_dump(header, sort_keys=False).strip()}
---

# {metadata.name}

{metadata.description}

Built with the dataset builders of the `spectralmoe` package (`modeling_spectralmoe.data.builders`).
Source split: `{metadata.source_split}`; target splits:
{', '.join(f'`{s}`' for s in metadata.target_splits) or 'none'}.

Columns: `pixel_values` {info.dtype} (C={len(metadata.band_names)}, {info.tile_size}, {info.tile_size}), `label` uint8
(H, W) with classes 0..{metadata.num_labels - 1} and {metadata.ignore_index} = ignore, `domain`, `image_id`.
No-data value (all bands): {metadata.nodata}. Mean / std: raw units, source split, no-data and padding excluded.

| band | name | wavelength (µm) | mean | std |
|---|---|---|---|---|
{bands}
{overrides}

| class | name |
|---|---|
{classes}

| split | examples | shards | domains |
|---|---|---|---|
{splits}

```python
from ..schema import load_spectral_dataset

dataset, metadata = load_spectral_dataset("<this folder or Hub id>")  # numpy arrays in the stored dtypes
```

`{METADATA_FILE}`:

```json
{json.dumps(metadata.to_dict(), indent=2)}
```

The imagery and labels keep the licence of their publisher; check it before redistributing.
"""


def _number(value) -> str:
    return "-" if value is None else f"{value:.4f}"


# ---- command line ----------------------------------------------------------------------------------------------


def builder_parser(description: str, items_per_shard: int | dict[str, int]) -> argparse.ArgumentParser:
    """The options every benchmark builder takes; `items_per_shard` is the builder's default (see `shard_size`)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw-dir", type=Path, required=True, help="the release as downloaded and unpacked")
    parser.add_argument("--output-dir", type=Path, required=True, help="where the dataset is written (resumable)")
    parser.add_argument("--push-to-hub", metavar="REPO", help="also upload the dataset to this Hub dataset repo")
    parser.add_argument("--items-per-shard", type=int, default=items_per_shard,
                        help=f"input images/scenes per parquet shard (default: {items_per_shard or 'per split'})")
    return parser


def push_to_hub(output_dir: Path, repo_id: str, private: bool = False) -> None:
    """Upload the data, metadata and card (not the build state); remote shards no longer produced are deleted."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", exist_ok=True, private=private)
    api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(output_dir),
                      allow_patterns=["data/**", "README.md", METADATA_FILE], delete_patterns=["data/**"])
    log(f"pushed {output_dir} to https://huggingface.co/datasets/{repo_id}")


def finish(args: argparse.Namespace, metadata: SpectralMetadata) -> None:
    """Report what was written and push it when asked."""
    states = split_states(args.output_dir)
    rows = ", ".join(f"{s}: {sum(x['rows'] for x in shards)}" for s, shards in states.items())
    log(f"wrote {metadata.name} to {args.output_dir} ({rows})")
    if args.push_to_hub:
        push_to_hub(args.output_dir, args.push_to_hub)
