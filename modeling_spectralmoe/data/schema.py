"""The dataset schema of SpectralMoE: what the dataset builders (`data.builders`) write and training reads.

A dataset is a `datasets.DatasetDict` with one split per domain role: `train` (source), optionally `validation`
(held-out source data), and one split per target domain (`target`, or `target_<name>`). Every split has the columns
of `segmentation_features`. Band names, wavelengths, per-band statistics and class names travel beside the data in
`spectral_metadata.json` (`SpectralMetadata`), so training never hard-codes them.

Public API:

- `segmentation_features(num_channels, height, width, dtype)` -> `datasets.Features`
- `SpectralMetadata` (dataclass) with `save(path)` / `SpectralMetadata.load(path_or_id)`, and the band roles
  `rgb_band_indices()`
- `BandStatistics`: streaming per-band mean/std (float64, Chan et al. merge) that skips no-data pixels
- `load_spectral_dataset(path_or_id)` -> `(DatasetDict in native-dtype numpy format, SpectralMetadata)`
- `with_native_numpy_format(dataset)`: the fast numpy format that keeps each column's stored dtype
- constants `METADATA_FILE = "spectral_metadata.json"`, `IGNORE_INDEX = 255`

This module needs only `datasets` and `numpy` (no rasterio, no torch).
"""

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field

import datasets
import numpy as np

from ..configuration_spectralmoe import rgb_band_indices


METADATA_FILE = "spectral_metadata.json"
IGNORE_INDEX = 255
SCHEMA_VERSION = 1


def segmentation_features(num_channels: int, height: int, width: int, dtype: str) -> datasets.Features:
    """Columns of every split.

    `pixel_values`: `Array3D` (C, H, W) in the sensor's native dtype (`"uint8"`, `"int16"`, `"uint16"`, `"float32"`...);
    `label`: `Array2D` (H, W) uint8, classes 0..K-1 and 255 = ignore; `domain`, `image_id`: strings.
    """
    return datasets.Features({
        "pixel_values": datasets.Array3D(shape=(num_channels, height, width), dtype=dtype),
        "label": datasets.Array2D(shape=(height, width), dtype="uint8"),
        "domain": datasets.Value("string"),
        "image_id": datasets.Value("string"),
    })


@dataclass
class SpectralMetadata:
    """What training needs to know about a dataset and must never hard-code; saved as `spectral_metadata.json`.

    Args:
        name (`str`): dataset name, e.g. `"five_billion_pixels-cross_sensor"`.
        band_names (`list[str]`): one name per band, in storage order, e.g. `["NIR", "R", "G", "B"]`. Bands named
            R, G, B (or Red, Green, Blue) drive photometric jitter and the depth encoder's input
            (`rgb_band_indices`).
        mean (`list[float]` or `None`): per-band mean in raw units (digital numbers, reflectance x 10000...) over the
            source split, no-data pixels excluded. `None` only while the dataset has no source split yet.
        std (`list[float]` or `None`): per-band population standard deviation, same conventions as `mean`.
        id2label (`dict[int, str]`): class index -> name; labels are 0..K-1 and `ignore_index` is not scored.
        wavelengths (`list[float]`, *optional*): central wavelength of each band in micrometres (DOFA needs them).
        source_split (`str`, defaults to `"train"`): the split used for training (and for `mean` / `std`).
        target_splits (`list[str]`, defaults to `[]`): the unseen target-domain splits.
        nodata (`float`, *optional*): raw value that marks a no-data pixel when **all** its bands hold it (NaN
            allowed for float data); such pixels are left out of the statistics.
        ignore_index (`int`, defaults to 255): label value that is not scored.
        domain_bands (`dict[str, dict]`, defaults to `{}`): per-domain band sets for domains whose bands differ from
            `band_names` / `wavelengths`: `{domain: {"band_names": [...], "wavelengths": [...] or None}}`. The same
            count (e.g. Vaihingen's NIR-R-G next to Potsdam's R-G-B) or another count, which needs wavelengths on both
            sides (for wavelength-conditioned encoders such as DOFA; e.g. a 12-band target next to a 48-band source).
            A domain's split stores its own band count. See `bands_of`.
        description (`str`, defaults to `""`): free text for people (provenance, protocol, licence pointer).
        schema_version (`int`): version of this file's format.
    """

    name: str
    band_names: list[str]
    mean: list[float] | None
    std: list[float] | None
    id2label: dict[int, str]
    wavelengths: list[float] | None = None
    source_split: str = "train"
    target_splits: list[str] = field(default_factory=list)
    nodata: float | None = None
    ignore_index: int = IGNORE_INDEX
    domain_bands: dict[str, dict] = field(default_factory=dict)
    description: str = ""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        self.id2label = {int(key): str(value) for key, value in self.id2label.items()}
        self.band_names = list(self.band_names)
        for name in ("mean", "std", "wavelengths"):
            values = getattr(self, name)
            if values is not None:
                setattr(self, name, [float(value) for value in values])
        self._check()

    def _check(self) -> None:
        """Refuse inconsistent metadata with a message naming the field, the expected and the found values."""
        bands = len(self.band_names)
        if bands == 0:
            raise ValueError("`band_names` is empty: a dataset has at least one band.")
        for name in ("mean", "std", "wavelengths"):
            values = getattr(self, name)
            if values is not None and len(values) != bands:
                raise ValueError(f"`{name}` has {len(values)} values for {bands} bands ({self.band_names}).")
        if sorted(self.id2label) != list(range(len(self.id2label))):
            raise ValueError(f"`id2label` keys must be 0..K-1, found {sorted(self.id2label)}.")
        if self.ignore_index in self.id2label:
            raise ValueError(f"`ignore_index` {self.ignore_index} is also a class index in `id2label`.")
        for domain in self.domain_bands:
            names, wavelengths = self.bands_of(domain)
            if wavelengths is not None and len(wavelengths) != len(names):
                raise ValueError(f"`domain_bands[{domain!r}]` has {len(wavelengths)} wavelengths for {len(names)} "
                                 f"band names {names}.")
            if len(names) != bands and (wavelengths is None or self.wavelengths is None):
                raise ValueError(
                    f"Domain {domain!r} has {len(names)} bands, the dataset {bands}: a different band count needs "
                    "wavelengths for both (only a wavelength-conditioned encoder such as DOFA can read it)."
                )

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def label2id(self) -> dict[str, int]:
        return {label: index for index, label in self.id2label.items()}

    def rgb_band_indices(self) -> list[int] | None:
        """Indices of the bands named R, G and B (case-insensitive; Red, Green, Blue too), in that order, or `None`
        when any of the three is missing (e.g. hyperspectral band numbers)."""
        return rgb_band_indices(self.band_names)

    def bands_of(self, domain: str) -> tuple[list[str], list[float] | None]:
        """`(band_names, wavelengths)` of one domain: its `domain_bands` entry where present, else the dataset's."""
        override = self.domain_bands.get(domain, {})
        return list(override.get("band_names", self.band_names)), override.get("wavelengths", self.wavelengths)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> str:
        """Write the JSON to `path` (a `.json` file) or to `path/spectral_metadata.json`; returns the file written."""
        path = os.fspath(path)
        target = path if path.endswith(".json") else os.path.join(path, METADATA_FILE)
        with open(target, "w") as handle:
            json.dump(self.to_dict(), handle, indent=2)
            handle.write("\n")
        return target

    @classmethod
    def load(cls, path_or_id: str | os.PathLike, revision: str | None = None) -> "SpectralMetadata":
        """From a `.json` file, a local dataset folder holding `spectral_metadata.json`, or a Hub dataset id."""
        path = os.fspath(path_or_id)
        if os.path.isdir(path):
            path = os.path.join(path, METADATA_FILE)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path} is missing: the dataset folder has no spectral metadata.")
        elif not os.path.isfile(path):
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(path, METADATA_FILE, repo_type="dataset", revision=revision)
        with open(path) as handle:
            return cls(**json.load(handle))


class BandStatistics:
    """Streaming per-band mean and (population) standard deviation in float64.

    Each `update` computes the batch's count, mean and sum of squared deviations (from per-band histograms for 8- and
    16-bit integers, in float64 otherwise) and merges them into the
    running values with the pairwise formula of Chan, Golub and LeVeque, so the result equals numpy's `mean` / `std`
    over all valid pixels up to float64 rounding, whatever the batch sizes. A pixel is skipped when `valid` is False
    there or when all its bands equal `nodata` (NaN-aware).

    Args:
        num_bands (`int`): number of bands C.
        nodata (`float`, *optional*): raw no-data value.
    """

    def __init__(self, num_bands: int, nodata: float | None = None):
        self.num_bands = num_bands
        self.nodata = nodata
        self.count = 0
        self._mean = np.zeros(num_bands, dtype=np.float64)
        self._m2 = np.zeros(num_bands, dtype=np.float64)

    def valid_pixels(self, pixels: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """The (C, N) values, in their dtype, of the pixels of a (C, ...) array that count."""
        if pixels.shape[0] != self.num_bands:
            raise ValueError(f"expected {self.num_bands} bands, found {pixels.shape[0]} (shape {pixels.shape}).")
        flat = pixels.reshape(self.num_bands, -1)
        keep = None if valid is None else np.asarray(valid, dtype=bool).reshape(-1)
        if self.nodata is not None and not (_is_nan(self.nodata) and flat.dtype.kind in "iu"):
            is_nodata = np.isnan(flat) if _is_nan(self.nodata) else flat == self.nodata
            data = ~is_nodata.all(axis=0)
            keep = data if keep is None else keep & data
        return flat if keep is None or keep.all() else flat[:, keep]

    def update(self, pixels: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add the pixels of a (C, ...) array (e.g. one (C, H, W) tile); `valid` has the trailing shape."""
        values = self.valid_pixels(pixels, valid)
        count = values.shape[1]
        if count == 0:
            return
        if values.dtype.kind in "iu" and values.dtype.itemsize <= 2:
            mean, m2 = _histogram_moments(values)
        else:
            values = values.astype(np.float64)
            mean = values.mean(axis=1)
            m2 = ((values - mean[:, None]) ** 2).sum(axis=1)
        self._merge(count, mean, m2)

    def merge(self, other: "BandStatistics") -> "BandStatistics":
        """Fold another accumulator (e.g. one shard's) into this one; returns self."""
        if other.num_bands != self.num_bands:
            raise ValueError(f"cannot merge statistics of {other.num_bands} bands into {self.num_bands} bands.")
        if other.count:
            self._merge(other.count, other._mean, other._m2)
        return self

    def _merge(self, count: int, mean: np.ndarray, m2: np.ndarray) -> None:
        total = self.count + count
        delta = mean - self._mean
        self._mean = self._mean + delta * (count / total)
        self._m2 = self._m2 + m2 + delta**2 * (self.count * count / total)
        self.count = total

    @property
    def mean(self) -> list[float]:
        self._require_data()
        return self._mean.tolist()

    @property
    def std(self) -> list[float]:
        self._require_data()
        return np.sqrt(self._m2 / self.count).tolist()

    def _require_data(self) -> None:
        if self.count == 0:
            raise ValueError("no valid pixel was seen: every pixel was no-data or masked out.")

    def to_dict(self) -> dict:
        """JSON-able state, e.g. to store one shard's statistics for a resumed build."""
        return {"num_bands": self.num_bands, "nodata": self.nodata, "count": self.count,
                "mean": self._mean.tolist(), "m2": self._m2.tolist()}

    @classmethod
    def from_dict(cls, state: dict) -> "BandStatistics":
        statistics = cls(state["num_bands"], state["nodata"])
        statistics.count = int(state["count"])
        statistics._mean = np.asarray(state["mean"], dtype=np.float64)
        statistics._m2 = np.asarray(state["m2"], dtype=np.float64)
        return statistics


def _histogram_moments(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and sum of squared deviations of (C, N) 8/16-bit integers from their histograms (exact sums in
    float64, much faster than converting the pixels to float64)."""
    offset = -int(np.iinfo(values.dtype).min)
    levels = np.arange(np.iinfo(values.dtype).max + offset + 1, dtype=np.float64) - offset
    means, m2s = [], []
    for band in values:
        counts = np.bincount(band.astype(np.int32) + offset if offset else band, minlength=len(levels))
        mean = counts @ levels / counts.sum()
        means.append(mean)
        m2s.append(counts @ (levels - mean) ** 2)
    return np.array(means), np.array(m2s)


def _is_nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def with_native_numpy_format(dataset):
    """`dataset.with_format("numpy", dtype=None)`: numpy arrays in each column's stored dtype.

    The plain `"numpy"` format casts every integer array to int64, which costs memory and, for 32-band uint16 tiles,
    several times the decoding time; `dtype=None` keeps uint8 / int16 / uint16 pixels and the uint8 labels as stored.
    Works on a `Dataset` or a `DatasetDict`.
    """
    return dataset.with_format("numpy", dtype=None)


def load_spectral_dataset(
    path_or_id: str | os.PathLike, *, cache_dir: str | None = None, revision: str | None = None
) -> tuple[datasets.DatasetDict, SpectralMetadata]:
    """A dataset in our schema and its metadata.

    `path_or_id` is a `save_to_disk` folder (has `dataset_dict.json`), a folder of parquet files (as written by
    the builders: `data/<split>/*.parquet`, or `<split>-*.parquet` files), or a Hub dataset id. The splits come
    back in `with_native_numpy_format` (numpy arrays in the stored dtypes: row access `ds["train"][i]` gives
    `pixel_values` (C, H, W), `label` (H, W) uint8, `domain`, `image_id`). `cache_dir` is where `datasets` caches
    parquet converted to arrow (default: its own cache); `revision` pins a Hub revision.
    """
    path = os.fspath(path_or_id)
    if os.path.isfile(os.path.join(path, "dataset_dict.json")):
        dataset = datasets.load_from_disk(path)
    elif os.path.isdir(path):  # split by split: splits of other band counts have other features
        dataset = datasets.DatasetDict({
            split: datasets.load_dataset("parquet", data_files={split: files}, split=split, cache_dir=cache_dir)
            for split, files in _parquet_splits(path).items()
        })
    else:
        dataset = datasets.load_dataset(path, cache_dir=cache_dir, revision=revision)
    return with_native_numpy_format(dataset), SpectralMetadata.load(path, revision=revision)


_HUB_SHARD_NAME = re.compile(r"^(?P<split>\w+)-\d{5}-of-\d{5}\.parquet$")


def _parquet_splits(directory: str) -> dict[str, list[str]]:
    """Parquet files per split: `<split>-NNNNN-of-NNNNN.parquet` files (the `push_to_hub` naming, in any folder), else
    the name of the folder holding the file (`data/<split>/*.parquet`, our builders' layout), or for files at the top
    the part of the name before the first "-". Custom split names such as `target_gf1` are not among those `datasets`
    infers by itself, hence this. Hidden folders (build state) are skipped."""
    splits: dict[str, list[str]] = {}
    for root, folders, files in os.walk(directory):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        for name in sorted(f for f in files if f.endswith(".parquet")):
            match = _HUB_SHARD_NAME.match(name)
            if match:
                split = match["split"]
            elif root != directory:
                split = os.path.basename(root)
            else:
                split = name.split("-")[0].removesuffix(".parquet")
            splits.setdefault(split, []).append(os.path.join(root, name))
    if not splits:
        raise FileNotFoundError(f"No dataset_dict.json and no parquet files under {directory}.")
    return {split: splits[split] for split in sorted(splits, key=split_sort_key)}


def split_sort_key(split: str) -> tuple[int, str]:
    """Order of splits for people: `train`, `validation`, then the others (targets) by name."""
    return {"train": 0, "validation": 1}.get(split, 2), split
