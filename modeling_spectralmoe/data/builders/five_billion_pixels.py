"""Five-Billion-Pixels settings (arXiv 2603.13352): GF-2 source, 4 bands NIR-R-G-B, 24 classes.

    spectralmoe-build-five-billion-pixels --raw-dir FBP --output-dir data/fbp_cross_sensor \
        --task cross_sensor
    spectralmoe-build-five-billion-pixels --raw-dir FBP --output-dir data/fbp_cross_regional \
        --task cross_regional [--splits FILE]

Release layout read (as the publisher distributes it), under --raw-dir:
- GF-2 scenes: `Image__8bit_NirRGB/*.tiff` (4 bands NIR, R, G, B, uint8, 6908 x 7300 with padding) and
  `Annotation__index/*.png` (0 = unlabelled, 1..24 = classes), paired by name (a label may add a suffix such as
  `_24label` to the image's name).
- cross_sensor targets: one folder per sensor named like `GF-1`, `PlanetScope`, `Sentinel-2` (case, "-" and "_"
  ignored), each holding an image folder (name starting with "image") of 4-band GeoTIFFs in the same band order and a
  label folder (name starting with "annotation" or "label"; one with "index" in its name is preferred) of index
  PNG/TIF labels with the same codes.

Protocol: GF-2 padding removed (rows 54..6853, columns 60..7259 kept: 6800 x 7200), then 512 tiles with padded edge
tiles (image 0, label 255): 14 x 15 = 210 tiles per scene. Target images: the 1024 x 1024 window centred on the
bounding box of the labelled pixels, tiled to 4 tiles of 512. Codes 1..24 -> classes 0..23, 0 -> 255. No-data:
pixels 0 in all bands.

Splits: cross_sensor: `train` = all GF-2 scenes, `target_gf1`, `target_planetscope`, `target_sentinel2`.
cross_regional: GF-2 scenes assigned by the split file (default `splits/five_billion_pixels_cross_regional.yaml`; the
paper's city lists are unpublished) to `train` and `target`.
"""

import re
from pathlib import Path

from ..benchmarks import (
    FIVE_BILLION_PIXELS_BANDS, FIVE_BILLION_PIXELS_CLASSES, FIVE_BILLION_PIXELS_WAVELENGTHS_UM,
)

from .common import (
    SPLITS_DIR, DatasetInfo, Item, build_dataset, builder_parser, domain_of, finish, labelled_window_tiles,
    list_files, load_splits_file, pair_files, padded_tiles, read_index_pair, remove_gf2_padding, shifted_codes,
    split_items,
)


BAND_NAMES = list(FIVE_BILLION_PIXELS_BANDS)
WAVELENGTHS = list(FIVE_BILLION_PIXELS_WAVELENGTHS_UM)
CLASSES = list(FIVE_BILLION_PIXELS_CLASSES)
CODES = shifted_codes(len(CLASSES))
SENSORS = {"gf1": "GF-1", "planetscope": "PlanetScope", "sentinel2": "Sentinel-2"}
TILE_SIZE, TARGET_WINDOW, NODATA = 512, 1024, 0


def normalised(name: str) -> str:
    return re.sub(r"[-_ ]", "", name).lower()


def gf2_items(raw_dir: Path, domain: str = "gf2") -> list[Item]:
    pairs = pair_files(list_files(raw_dir / "Image__8bit_NirRGB"), list_files(raw_dir / "Annotation__index"),
                       prefix_match=True)
    return [Item(key, image, label, domain, {"scene": "gf2"}) for key, image, label in pairs]


def subfolder(folder: Path, prefixes: tuple[str, ...]) -> Path:
    """The subfolder whose name starts with one of `prefixes` (one containing "index" preferred)."""
    found = sorted((p for p in folder.iterdir() if p.is_dir() and normalised(p.name).startswith(prefixes)),
                   key=lambda p: "index" not in p.name.lower())
    if not found:
        raise FileNotFoundError(f"{folder}: expected a subfolder named {' or '.join(prefixes)}..., found "
                                f"{sorted(p.name for p in folder.iterdir())}.")
    return found[0]


def sensor_items(raw_dir: Path, sensor: str) -> list[Item]:
    """The images of one target sensor's folder."""
    folders = [p for p in raw_dir.iterdir() if p.is_dir() and normalised(p.name) == sensor]
    if len(folders) != 1:
        raise FileNotFoundError(f"{raw_dir}: expected one folder for {SENSORS[sensor]} (e.g. '{SENSORS[sensor]}'), "
                                f"found {[p.name for p in folders]}.")
    images = list_files(subfolder(folders[0], ("image",)))
    labels = list_files(subfolder(folders[0], ("annotation", "label")))
    return [Item(f"{sensor}/{key}", image, label, sensor, {"scene": "target"})
            for key, image, label in pair_files(images, labels, prefix_match=True)]


def cross_sensor_splits(raw_dir: Path) -> dict[str, list[Item]]:
    return {"train": gf2_items(raw_dir), **{f"target_{s}": sensor_items(raw_dir, s) for s in SENSORS}}


def cross_regional_splits(raw_dir: Path, spec: dict) -> dict[str, list[Item]]:
    """GF-2 scenes by split; the domain is the split file's `domains` entry of the scene, else `gf2_<split>`."""
    splits = split_items(gf2_items(raw_dir), spec)
    for split, items in splits.items():
        for item in items:
            item.domain = domain_of(item.key, spec, f"gf2_{split}")
    return splits


def decode(item: Item):
    image, label = read_index_pair(item, BAND_NAMES, CODES, nodata=NODATA)
    if item.extra["scene"] == "gf2":
        image, label = remove_gf2_padding(image, label, item.image)
        return padded_tiles(image, label, TILE_SIZE, item.image.stem, item.domain, NODATA)
    return labelled_window_tiles(image, label, TARGET_WINDOW, TILE_SIZE, item.image.stem, item.domain, NODATA)


def main(argv=None):
    parser = builder_parser(__doc__, items_per_shard=None)
    parser.add_argument("--task", choices=["cross_sensor", "cross_regional"], required=True)
    parser.add_argument("--splits", type=Path, default=SPLITS_DIR / "five_billion_pixels_cross_regional.yaml",
                        help="cross_regional only: which GF-2 scenes are source and target")
    args = parser.parse_args(argv)
    if args.task == "cross_sensor":
        splits, protocol = cross_sensor_splits(args.raw_dir), "GF-2 -> GF-1, PlanetScope, Sentinel-2"
        per_shard = args.items_per_shard or {"train": 1, "target": 64}  # one GF-2 scene (210 tiles), 64 target images
    else:
        per_shard = args.items_per_shard or 1
        splits, protocol = cross_regional_splits(args.raw_dir, load_splits_file(args.splits)), (
            f"GF-2 scenes of some cities -> other cities ({args.splits.name})")
    info = DatasetInfo(
        name=f"five_billion_pixels-{args.task}", band_names=BAND_NAMES, wavelengths=WAVELENGTHS,
        id2label=dict(enumerate(CLASSES)), dtype="uint8", tile_size=TILE_SIZE, nodata=NODATA,
        description=f"Five-Billion-Pixels (Tong et al., 2023), {args.task.replace('_', '-')}: {protocol}. "
                    "8-bit NIR-R-G-B, 24 classes.",
    )
    finish(args, build_dataset(args.output_dir, info, splits, decode, per_shard))


if __name__ == "__main__":
    main()
