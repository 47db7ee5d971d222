"""WHU-OHS cross-regional setting (arXiv 2603.13352): OHS scenes of some regions -> scenes of other regions.

    spectralmoe-build-whu-ohs --raw-dir WHU-OHS --output-dir data/whu_ohs [--splits FILE]

Release layout read (as published): `tr/`, `val/`, `ts/`, each with `image/*.tif` (32 bands, int16,
reflectance x 10000) and `label/*.tif` (0 = unlabelled, 1..24 second-level classes) of the same names.

Protocol: the 24 second-level classes become the 7 first-level ones (1-2 farmland, 3-6 forest, 7-9 grassland,
10-14 waterbody, 15-17 built-up, 18-23 unused land, 24 ocean), 0 -> 255 (ignore); tiles of 512 (padded if a file is
not a multiple of 512). No-data: pixels with 0 in all 32 bands.

Regions: the paper's split is unpublished. Every file belongs to the scene named by the start of its file name
(`--scene-pattern`, default: the text before the first "_"), and the split file (`--splits`, default
`splits/whu_ohs_cross_regional.yaml`, format in `splits/README.md`) assigns scenes to `train` (source) and `target`
splits. Source scenes: files of `tr/` -> `train`, of `val/` and `ts/` -> `validation`. Target scenes: files of all
three folders -> their target split. `domain` is the scene name.
"""

import re
from pathlib import Path

import numpy as np

from .common import (
    SPLITS_DIR, DatasetInfo, Item, build_dataset, builder_parser, finish, list_files, load_splits_file, pair_files,
    padded_tiles, read_index_pair, split_items,
)


NUM_BANDS = 32
BAND_NAMES = [f"B{i:02d}" for i in range(1, NUM_BANDS + 1)]
WAVELENGTHS = np.round(np.linspace(0.466, 0.940, NUM_BANDS), 4).tolist()
CLASSES = ["farmland", "forest", "grassland", "waterbody", "built-up", "unused land", "ocean"]
FIRST_LEVEL = {1: 0, 2: 0, 3: 1, 4: 1, 5: 1, 6: 1, 7: 2, 8: 2, 9: 2, 10: 3, 11: 3, 12: 3, 13: 3, 14: 3,
               15: 4, 16: 4, 17: 4, 18: 5, 19: 5, 20: 5, 21: 5, 22: 5, 23: 5, 24: 6}
CODES = {0: 255, **FIRST_LEVEL}
FOLDERS = ("tr", "val", "ts")
TILE_SIZE = 512
NODATA = 0


def scene_of(path: Path, pattern: re.Pattern) -> str:
    match = pattern.match(path.stem)
    if not match:
        raise ValueError(f"{path}: expected a file name matching --scene-pattern {pattern.pattern!r}.")
    return match[1]


def release_items(raw_dir: Path, pattern: re.Pattern) -> list[Item]:
    """Every file pair of the release; the domain is the file's scene, `extra["folder"]` its official folder."""
    found = []
    for folder in FOLDERS:
        pairs = pair_files(list_files(raw_dir / folder / "image"), list_files(raw_dir / folder / "label"))
        found += [Item(f"{folder}/{key}", image, label, scene_of(image, pattern), {"folder": folder})
                  for key, image, label in pairs]
    return found


def items(raw_dir: Path, spec: dict, pattern: re.Pattern) -> dict[str, list[Item]]:
    """Scenes split by the split file; source scenes keep the official folders apart (tr -> train, val and ts ->
    validation), target scenes go whole to their split."""
    splits = split_items(release_items(raw_dir, pattern), spec, key=lambda item: item.domain)
    held_out = [item for item in splits.get("train", []) if item.extra["folder"] != "tr"]
    if held_out:
        splits["train"] = [item for item in splits["train"] if item.extra["folder"] == "tr"]
        splits["validation"] = splits.get("validation", []) + held_out
    return splits


def decode(item: Item):
    image, label = read_index_pair(item, BAND_NAMES, CODES, nodata=NODATA)
    return padded_tiles(image, label, TILE_SIZE, item.image.stem, item.domain, pad_value=NODATA)


def main(argv=None):
    parser = builder_parser(__doc__, items_per_shard=16)
    parser.add_argument("--splits", type=Path, default=SPLITS_DIR / "whu_ohs_cross_regional.yaml")
    parser.add_argument("--scene-pattern", default=r"^([^_]+)_", help="regex; group 1 of a file stem = its scene")
    args = parser.parse_args(argv)
    info = DatasetInfo(
        name="whu_ohs-cross_regional", band_names=BAND_NAMES, wavelengths=WAVELENGTHS,
        id2label=dict(enumerate(CLASSES)), dtype="int16", tile_size=TILE_SIZE, nodata=NODATA,
        description="WHU-OHS (Li et al., 2022), Orbita OHS hyperspectral, 32 bands 466-940 nm, reflectance x 10000, "
                    f"10 m; first-level classes; regions split by {args.splits.name}.",
    )
    splits = items(args.raw_dir, load_splits_file(args.splits), re.compile(args.scene_pattern))
    finish(args, build_dataset(args.output_dir, info, splits, decode, args.items_per_shard))


if __name__ == "__main__":
    main()
