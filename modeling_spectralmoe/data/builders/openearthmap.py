"""OpenEarthMap cross-continent setting (arXiv 2603.13352): regions of some continents -> held-out continents.

    spectralmoe-build-openearthmap --raw-dir OpenEarthMap_wo_xBD --output-dir data/oem [--splits FILE]

Release layout read (as published): `{region}/images/{region}_{k}.tif` (RGB) and `{region}/labels/{region}_{k}.tif`
(0 = unknown -> 255, 1..8 = bareland, rangeland, developed space, road, tree, water, agriculture, building -> 0..7).
Images without a label file (the withheld test labels, the xBD images the release does not carry) are reported and
left out.

Continents: the release does not name them and the paper's split is unpublished. The split file (`--splits`, default
`splits/openearthmap_continents.yaml`, format in `splits/README.md`) maps regions to continents under `domains:` and
continents to splits (`train`, one `target_<continent>` per held-out continent). A region missing from the table
belongs to no split and is reported; extend the table for your download. `domain` is the continent. Images are kept
whole, as for LoveDA (the release's 1024 x 1024; smaller ones padded: image 0, label 255), so training resizes whole
images as the paper's training recipe does and evaluation slides 512 windows over them.
"""

from pathlib import Path

from .common import (
    SPLITS_DIR, DatasetInfo, Item, build_dataset, builder_parser, domain_of, finish, list_files, load_splits_file,
    pair_files, padded_tiles, read_index_pair, shifted_codes, split_items,
)


BAND_NAMES = ["R", "G", "B"]
WAVELENGTHS = [0.665, 0.56, 0.49]
CLASSES = ["bareland", "rangeland", "developed space", "road", "tree", "water", "agriculture", "building"]
TILE_SIZE = 1024


def region_items(raw_dir: Path, spec: dict) -> list[Item]:
    """The labelled images of every region folder (a folder with `images/` and `labels/`)."""
    found = []
    for region_dir in sorted(p.parent for p in raw_dir.glob("*/images")):
        region = region_dir.name
        pairs = pair_files(list_files(region_dir / "images"), list_files(region_dir / "labels"), missing="skip")
        found += [Item(f"{region}/{key}", image, label, domain_of(region, spec, region), {"region": region})
                  for key, image, label in pairs]
    if not found:
        raise FileNotFoundError(f"{raw_dir}: expected region folders with images/ and labels/, found none.")
    return found


def decode(item: Item):
    image, label = read_index_pair(item, BAND_NAMES, shifted_codes(len(CLASSES)))
    return padded_tiles(image, label, TILE_SIZE, item.image.stem, item.domain)


def main(argv=None):
    parser = builder_parser(__doc__, items_per_shard=64)
    parser.add_argument("--splits", type=Path, default=SPLITS_DIR / "openearthmap_continents.yaml")
    args = parser.parse_args(argv)
    spec = load_splits_file(args.splits)
    splits = split_items(region_items(args.raw_dir, spec), spec, key=lambda item: item.extra["region"])
    info = DatasetInfo(
        name="openearthmap-cross_continent", band_names=BAND_NAMES, wavelengths=WAVELENGTHS,
        id2label=dict(enumerate(CLASSES)), dtype="uint8", tile_size=TILE_SIZE,
        description=f"OpenEarthMap (Xia et al., 2023), 0.25-0.5 m RGB, 8 classes; continents split by "
                    f"{args.splits.name}.",
    )
    finish(args, build_dataset(args.output_dir, info, splits, decode, args.items_per_shard))


if __name__ == "__main__":
    main()
