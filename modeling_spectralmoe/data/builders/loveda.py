"""LoveDA cross-style setting (arXiv 2603.13352): Rural -> Urban, RGB, 7 classes.

    spectralmoe-build-loveda --raw-dir LoveDA --output-dir data/loveda [--push-to-hub USER/loveda]

Release layout read (as published): `{Train,Val}/{Rural,Urban}/images_png/*.png` (1024 x 1024 RGB) with
`.../masks_png/*.png` of the same names: 0 = no-data (ignore), 1..7 = background, building, road, water, barren,
forest, agricultural (-> classes 0..6). The test labels are not public.

Splits: `train` = Train/Rural, `validation` = Val/Rural, `target` = Val/Urban. Images are kept whole (1024 x 1024;
the 512 training crops are random and happen in training).
"""

from pathlib import Path

from .common import (
    DatasetInfo, Item, build_dataset, builder_parser, finish, list_files, pair_files, padded_tiles, read_index_pair,
    shifted_codes,
)


BAND_NAMES = ["R", "G", "B"]
WAVELENGTHS = [0.665, 0.56, 0.49]
CLASSES = ["background", "building", "road", "water", "barren", "forest", "agricultural"]
TILE_SIZE = 1024
SPLITS = {"train": ("Train", "Rural"), "validation": ("Val", "Rural"), "target": ("Val", "Urban")}


def items(raw_dir: Path, stage: str, scene: str) -> list[Item]:
    """The image/mask pairs of one folder; the domain is the scene type ("rural" / "urban")."""
    folder = raw_dir / stage / scene
    pairs = pair_files(list_files(folder / "images_png"), list_files(folder / "masks_png"))
    return [Item(f"{stage}/{scene}/{key}", image, label, scene.lower()) for key, image, label in pairs]


def decode(item: Item):
    image, label = read_index_pair(item, BAND_NAMES, shifted_codes(len(CLASSES)))
    return padded_tiles(image, label, TILE_SIZE, f"{item.domain}_{item.image.stem}", item.domain)


def main(argv=None):
    args = builder_parser(__doc__, items_per_shard=100).parse_args(argv)
    info = DatasetInfo(
        name="loveda-rural_to_urban", band_names=BAND_NAMES, wavelengths=WAVELENGTHS,
        id2label=dict(enumerate(CLASSES)), dtype="uint8", tile_size=TILE_SIZE,
        description="LoveDA (Wang et al., 2021), cross-style setting: rural scenes -> urban scenes, 0.3 m RGB.",
    )
    splits = {split: items(args.raw_dir, *folders) for split, folders in SPLITS.items()}
    finish(args, build_dataset(args.output_dir, info, splits, decode, args.items_per_shard))


if __name__ == "__main__":
    main()
