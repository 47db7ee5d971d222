"""FLAIR #1 cross-regional setting (arXiv 2603.13352): official train départements -> test départements.

    spectralmoe-build-flair --raw-dir FLAIR1 --output-dir data/flair [--push-to-hub USER/flair]

Release layout read (as the publisher distributes it):
`flair_aerial_{train,test}/D0xx_20xx/Z*/img/IMG_<n>.tif` (512 x 512, 5 bands R, G, B, NIR, elevation, uint8) and
`flair_labels_{train,test}/D0xx_20xx/Z*/msk/MSK_<n>.tif` (codes 1..19).

Protocol: the elevation band is dropped (4 bands R, G, B, NIR kept); codes 1..12 (building ... plowed) -> classes
0..11, codes 13..19 (and 0, if present) -> 255 (ignore). Splits: `train` = flair_*_train, `target` = flair_*_test;
`domain` is the département folder (e.g. `D004_2021`).
"""

import re
from pathlib import Path

from .common import (
    DatasetInfo, Item, build_dataset, builder_parser, finish, list_files, pair_files, padded_tiles, read_index_pair,
    shifted_codes,
)


FILE_BANDS = ["R", "G", "B", "NIR", "elevation"]
KEEP = [0, 1, 2, 3]
WAVELENGTHS = [0.665, 0.56, 0.49, 0.83]
CLASSES = ["building", "pervious surface", "impervious surface", "bare soil", "water", "coniferous", "deciduous",
           "brushwood", "vineyard", "herbaceous vegetation", "agricultural land", "plowed land"]
IGNORED_CODES = range(13, 20)
TILE_SIZE = 512
SPLITS = {"train": "train", "target": "test"}


def number(path: Path) -> str:
    """The patch number shared by `IMG_<n>.tif` and `MSK_<n>.tif`."""
    match = re.match(r"^(?:IMG|MSK)_(\w+)$", path.stem)
    if not match:
        raise ValueError(f"{path}: expected a file named IMG_<n> or MSK_<n>.")
    return match[1]


def items(raw_dir: Path, stage: str) -> list[Item]:
    """The patches of one official stage; the département is the first folder below the stage folder."""
    image_root, label_root = raw_dir / f"flair_aerial_{stage}", raw_dir / f"flair_labels_{stage}"
    images = list_files(image_root, pattern="*/*/img/IMG_*")
    pairs = pair_files(images, list_files(label_root, pattern="*/*/msk/MSK_*"), number, number)
    return [Item(f"{stage}/{key}", image, label, image.relative_to(image_root).parts[0])
            for key, image, label in pairs]


def decode(item: Item):
    image, label = read_index_pair(item, FILE_BANDS, shifted_codes(len(CLASSES), IGNORED_CODES), keep=KEEP)
    return padded_tiles(image, label, TILE_SIZE, item.image.stem, item.domain)


def main(argv=None):
    args = builder_parser(__doc__, items_per_shard=200).parse_args(argv)
    info = DatasetInfo(
        name="flair-cross_regional", band_names=FILE_BANDS[:4], wavelengths=WAVELENGTHS,
        id2label=dict(enumerate(CLASSES)), dtype="uint8", tile_size=TILE_SIZE,
        description="FLAIR #1 (Garioud et al., 2023), 0.2 m aerial R-G-B-NIR; train départements -> test "
                    "départements. Elevation band dropped, classes 13-19 ignored.",
    )
    splits = {split: items(args.raw_dir, stage) for split, stage in SPLITS.items()}
    finish(args, build_dataset(args.output_dir, info, splits, decode, args.items_per_shard))


if __name__ == "__main__":
    main()
