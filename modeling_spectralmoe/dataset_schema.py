"""The dataset schema of DESIGN.md: one split per domain role, band metadata beside the data."""

import json
import os
from dataclasses import asdict, dataclass, field

import datasets


METADATA_FILE = "spectral_metadata.json"
IGNORE_INDEX = 255


def segmentation_features(num_channels: int, height: int, width: int, dtype: str) -> datasets.Features:
    """Columns of every split: image bands (C, H, W) in the sensor's dtype, uint8 labels (255 = ignore), domain, id."""
    return datasets.Features({
        "pixel_values": datasets.Array3D(shape=(num_channels, height, width), dtype=dtype),
        "label": datasets.Array2D(shape=(height, width), dtype="uint8"),
        "domain": datasets.Value("string"),
        "image_id": datasets.Value("string"),
    })


@dataclass
class SpectralMetadata:
    """What training needs to know about a dataset and must never hard-code.

    Args:
        name: dataset name.
        band_names: one name per band, e.g. `["NIR", "R", "G", "B"]`; R, G, B drive photometric jitter and depth input.
        mean, std: per-band statistics in raw units over the source split, no-data excluded.
        id2label: class index -> name (labels are 0..K-1, 255 = ignore).
        wavelengths: band centres in micrometres (needed by DOFA), or None.
        source_split: the split used for training.
        target_splits: the unseen target domains.
        nodata: raw value marking no-data pixels (in all bands), or None.
        ignore_index: label value that is not scored.
    """

    name: str
    band_names: list[str]
    mean: list[float]
    std: list[float]
    id2label: dict[int, str]
    wavelengths: list[float] | None = None
    source_split: str = "train"
    target_splits: list[str] = field(default_factory=list)
    nodata: float | None = None
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self):
        self.id2label = {int(key): value for key, value in self.id2label.items()}
        for name in ("mean", "std") + (("wavelengths",) if self.wavelengths is not None else ()):
            if len(getattr(self, name)) != len(self.band_names):
                raise ValueError(
                    f"`{name}` has {len(getattr(self, name))} values for {len(self.band_names)} bands "
                    f"({self.band_names})."
                )

    def save(self, directory: str) -> None:
        with open(os.path.join(directory, METADATA_FILE), "w") as handle:
            json.dump(asdict(self), handle, indent=2)

    @classmethod
    def load(cls, path_or_id: str) -> "SpectralMetadata":
        """From a local dataset folder, or from a dataset repository on the Hub."""
        path = os.path.join(path_or_id, METADATA_FILE)
        if not os.path.isfile(path):
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(path_or_id, METADATA_FILE, repo_type="dataset")
        with open(path) as handle:
            return cls(**json.load(handle))


def load_spectral_dataset(path_or_id: str) -> tuple[datasets.DatasetDict, SpectralMetadata]:
    """A dataset in our schema and its metadata, from a `save_to_disk` folder, a folder of parquet files
    (`<split>-*.parquet` or `<split>/*.parquet`) or a Hub dataset id; splits come back in numpy format."""
    if os.path.isfile(os.path.join(path_or_id, "dataset_dict.json")):
        dataset = datasets.load_from_disk(path_or_id)
    elif os.path.isdir(path_or_id):
        dataset = datasets.load_dataset("parquet", data_files=_parquet_splits(path_or_id))
    else:
        dataset = datasets.load_dataset(path_or_id)
    return dataset.with_format("numpy"), SpectralMetadata.load(path_or_id)


def _parquet_splits(directory: str) -> dict[str, list[str]]:
    """Parquet files per split: `<split>-*.parquet` files or `<split>/*.parquet` folders (custom split names such as
    `target_gf1` are not among those `datasets` infers by itself)."""
    splits: dict[str, list[str]] = {}
    for root, _, files in os.walk(directory):
        for name in sorted(f for f in files if f.endswith(".parquet")):
            split = os.path.basename(root) if root != directory else name.split("-")[0].removesuffix(".parquet")
            splits.setdefault(split, []).append(os.path.join(root, name))
    if not splits:
        raise FileNotFoundError(f"No dataset_dict.json and no parquet files under {directory}.")
    return splits
