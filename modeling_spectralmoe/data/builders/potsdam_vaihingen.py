"""ISPRS Potsdam -> Vaihingen cross-band setting (arXiv 2603.13352): Potsdam R-G-B -> Vaihingen NIR-R-G, 6 classes.

    spectralmoe-build-potsdam-vaihingen --raw-dir ISPRS --output-dir data/potsdam_vaihingen [--splits FILE]

Release layout read (as the publisher distributes it), anywhere below --raw-dir (both releases unpacked there):
- Potsdam: `2_Ortho_RGB/top_potsdam_{r}_{c}_RGB.tif` (6000 x 6000, R-G-B uint8); colour labels
  `5_Labels_all/top_potsdam_{r}_{c}_label.tif` (`--labels full`) or the eroded `5_Labels_all_noBoundary/
  top_potsdam_{r}_{c}_label_noBoundary.tif` (`--labels eroded`, default).
- Vaihingen: `top/top_mosaic_09cm_area{n}.tif` (NIR-R-G uint8); colour labels
  `gts_for_participants/top_mosaic_09cm_area{n}.tif` (full) or `top_mosaic_09cm_area{n}_noBoundary.tif` (eroded, in
  any folder).

Protocol: ISPRS palette -> impervious surface, building, low vegetation, tree, car, clutter (classes 0..5); black
(the eroded boundary) -> 255; other colours are refused unless `--unknown-colours ignore`. Crops of 512 every 256
pixels (the last row/column of crops ends at the border). Splits from the split file (default
`splits/potsdam_vaihingen.yaml`: the ISPRS training tiles of Potsdam -> `train`, its test tiles -> `validation`, the
ISPRS test areas of Vaihingen -> `target`); keys are `potsdam/<r>_<c>` and `vaihingen/area<n>`. Domains `potsdam` and
`vaihingen`; Vaihingen's band names and wavelengths are recorded as a per-domain override in the metadata.
"""

import re
from pathlib import Path

from .common import (
    SPLITS_DIR, DatasetInfo, Item, build_dataset, builder_parser, check_same_size, decode_palette, finish,
    load_splits_file, pair_files, read_colour_label, read_image, sliding_tiles, split_items,
)


BAND_NAMES = ["R", "G", "B"]
WAVELENGTHS = [0.665, 0.56, 0.49]
VAIHINGEN_BANDS = {"band_names": ["NIR", "R", "G"], "wavelengths": [0.84, 0.665, 0.56]}
CLASSES = ["impervious surface", "building", "low vegetation", "tree", "car", "clutter"]
PALETTE = {(255, 255, 255): 0, (0, 0, 255): 1, (0, 255, 255): 2, (0, 255, 0): 3, (255, 255, 0): 4, (255, 0, 0): 5,
           (0, 0, 0): 255}
BANDS_OF = {"potsdam": BAND_NAMES, "vaihingen": VAIHINGEN_BANDS["band_names"]}
CROP, STRIDE = 512, 256
# domain -> (image glob, label glob per label kind, key pattern)
RELEASES = {
    "potsdam": ("2_Ortho_RGB/top_potsdam_*_RGB.tif",
                {"full": "5_Labels_all/top_potsdam_*_label.tif", "eroded": "top_potsdam_*_label_noBoundary.tif"},
                re.compile(r"^top_potsdam_(\d+_\d+)_")),
    "vaihingen": ("top/top_mosaic_09cm_area*.tif",
                  {"full": "gts_for_participants/top_mosaic_09cm_area*.tif",
                   "eroded": "top_mosaic_09cm_area*_noBoundary.tif"},
                  re.compile(r"^top_mosaic_09cm_(area\d+)")),
}


def release_items(raw_dir: Path, domain: str, labels: str) -> list[Item]:
    """Image/label pairs of one city, keyed `<domain>/<tile>`."""
    image_glob, label_globs, key_pattern = RELEASES[domain]
    images = sorted(raw_dir.rglob(image_glob))
    label_files = sorted(raw_dir.rglob(label_globs[labels]))
    if not images:
        raise FileNotFoundError(f"{raw_dir}: expected {domain} images matching {image_glob}, found none.")

    def key(path: Path) -> str:
        match = key_pattern.match(path.name)
        if match is None:
            raise ValueError(f"{path}: expected a {domain} file name matching {key_pattern.pattern!r}.")
        return f"{domain}/{match[1]}"

    return [Item(k, image, label, domain) for k, image, label in pair_files(images, label_files, key, key)]


def decode(item: Item, unknown_as_ignore: bool):
    image = read_image(item.image, BANDS_OF[item.domain])
    colour = read_colour_label(item.label)
    check_same_size(image, colour, item.image, item.label)
    label = decode_palette(colour, PALETTE, item.label, unknown_as_ignore)
    return sliding_tiles(image, label, CROP, STRIDE, item.key.replace("/", "_"), item.domain)


def main(argv=None):
    parser = builder_parser(__doc__, items_per_shard=1)
    parser.add_argument("--splits", type=Path, default=SPLITS_DIR / "potsdam_vaihingen.yaml")
    parser.add_argument("--labels", choices=["eroded", "full"], default="eroded",
                        help="eroded: boundaries are black -> ignored (default); full: complete labels")
    parser.add_argument("--unknown-colours", choices=["error", "ignore"], default="error")
    args = parser.parse_args(argv)
    found = [item for domain in RELEASES for item in release_items(args.raw_dir, domain, args.labels)]
    splits = split_items(found, load_splits_file(args.splits))
    info = DatasetInfo(
        name="potsdam_to_vaihingen", band_names=BAND_NAMES, wavelengths=WAVELENGTHS,
        id2label=dict(enumerate(CLASSES)), dtype="uint8", tile_size=CROP, domain_bands={"vaihingen": VAIHINGEN_BANDS},
        description="ISPRS Potsdam (R-G-B, 5 cm) -> ISPRS Vaihingen (NIR-R-G, 9 cm), cross-band setting; "
                    f"{args.labels} labels, 512 crops with stride 256.",
    )
    unknown = args.unknown_colours == "ignore"
    metadata = build_dataset(args.output_dir, info, splits, lambda item: decode(item, unknown), args.items_per_shard,
                             options={"labels": args.labels, "unknown_colours": args.unknown_colours})
    finish(args, metadata)


if __name__ == "__main__":
    main()
