r"""Users' own data (any sensor) as a dataset of our schema, one domain per call, appended to one dataset.

    spectralmoe-build-folder --images DIR --labels DIR --band-names NIR R G B \
        [--wavelengths 0.83 0.665 0.56 0.49] (--label-map FILE | --class-names NAME ...) --domain NAME \
        --output-dir OUT [--role source|validation|target] [--tile-size 512] [--nodata VALUE]

Images: GeoTIFF (read with rasterio) or PNG/JPEG (pillow), all with the bands named by --band-names in that order and
one dtype. Labels: files of the same names (a label may add a suffix such as `_label`) in --labels, either index
labels or, with a palette label map, RGB colour labels.

Labels to classes:
- `--class-names A B C`: codes 1..K are the classes A, B, C... (-> 0..K-1) and 0 is ignored (the usual protocol).
- `--label-map FILE` (YAML/JSON): raw value -> class name or `ignore`, classes numbered in order of first appearance
  (several values may share a name). Keys are codes (`3: building`) or RGB colours (`"0,0,255": building`).
Any other value found in a label is refused.

Roles: the first call (no `train` split yet) defaults to `--role source` -> split `train`; later calls default to
`--role target` -> split `target_<domain>`; `--role validation` -> `validation`; a call for a domain already in the
dataset defaults to that domain's split. Every call must give the same band
count, dtype, tile size and classes; band names or wavelengths that differ from the dataset's (e.g. NIR-R-G next to
R-G-B) are recorded for that domain in the metadata (`domain_bands`). Statistics come from the `train` split. Images
are tiled to --tile-size with padded edge tiles (image: --nodata or 0, label 255). Rerunning a call resumes it.
"""

import argparse
import re
from pathlib import Path

import yaml

from .common import (
    IGNORE_INDEX, DatasetInfo, Item, build_dataset, check_same_size, decode_palette, finish, list_files, pair_files,
    padded_tiles, read_colour_label, read_image, read_index_label, read_raster, remap_index_label, shifted_codes,
    split_states,
)
from ..schema import METADATA_FILE, SpectralMetadata


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--band-names", nargs="+", required=True)
    parser.add_argument("--wavelengths", nargs="+", type=float, help="band centres in micrometres")
    classes = parser.add_mutually_exclusive_group(required=True)
    classes.add_argument("--label-map", type=Path, help="YAML/JSON: label value (code or 'R,G,B') -> class / ignore")
    classes.add_argument("--class-names", nargs="+", help="classes of codes 1..K (0 = ignore)")
    parser.add_argument("--domain", required=True, help="name of this domain, e.g. the sensor or region")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--role", choices=["source", "validation", "target"],
                        help="default: source for the first domain, then target")
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--nodata", type=float, help="raw value of no-data pixels (all bands)")
    parser.add_argument("--name", help="dataset name (default: the output folder's name)")
    parser.add_argument("--description", default="")
    parser.add_argument("--items-per-shard", type=int, default=64)
    parser.add_argument("--push-to-hub", metavar="REPO")
    args = parser.parse_args(argv)
    if args.wavelengths is not None and len(args.wavelengths) != len(args.band_names):
        parser.error(f"expected one wavelength per band ({len(args.band_names)}), found {len(args.wavelengths)}.")
    return args


def parse_label_map(path: Path) -> tuple[dict[int, str], dict, bool]:
    """(id2label, value -> class index or 255, whether the values are RGB colours) from a label-map file."""
    with open(path) as handle:
        entries = yaml.safe_load(handle)
    if not isinstance(entries, dict) or not entries:
        raise ValueError(f"{path}: expected a mapping of label values to class names, found {entries!r}.")
    names: list[str] = []
    mapping, colours = {}, None
    for key, name in entries.items():
        is_colour = isinstance(key, str) and re.fullmatch(r"\s*\d+\s*,\s*\d+\s*,\s*\d+\s*", key) is not None
        if colours is not None and is_colour != colours:
            raise ValueError(f"{path}: expected all keys to be codes or all to be 'R,G,B' colours, found both.")
        colours = is_colour
        if name is None or str(name).lower() == "ignore":
            index = IGNORE_INDEX
        else:
            names += [] if str(name) in names else [str(name)]
            index = names.index(str(name))
        mapping[tuple(int(v) for v in key.split(",")) if is_colour else int(key)] = index
    return dict(enumerate(names)), mapping, colours


def label_spec(args) -> tuple[dict[int, str], dict, bool]:
    if args.label_map is not None:
        return parse_label_map(args.label_map)
    return dict(enumerate(args.class_names)), shifted_codes(len(args.class_names)), False


def previous_metadata(output_dir: Path) -> SpectralMetadata | None:
    return SpectralMetadata.load(output_dir) if (output_dir / METADATA_FILE).is_file() else None


def split_name(args, states: dict) -> str:
    """This domain's split: from --role; without it, the split already holding the domain (a resumed call), else
    `train` while there is none, else `target_<domain>`."""
    holding = [split for split, shards in states.items() if any(args.domain in s["domains"] for s in shards)]
    if args.role is None and holding:
        return holding[0]
    role = args.role or ("target" if "train" in states else "source")
    split = {"source": "train", "validation": "validation"}.get(role) or f"target_{slug(args.domain)}"
    domains = {d for state in states.get(split, []) for d in state["domains"]}
    if domains and domains != {args.domain}:
        raise ValueError(f"split {split!r} of {args.output_dir} already holds domain(s) {sorted(domains)}, not "
                         f"{args.domain!r}; choose another --role or --output-dir.")
    return split


def slug(name: str) -> str:
    return re.sub(r"\W+", "_", name.strip().lower()).strip("_")


def dataset_info(args, previous: SpectralMetadata | None, id2label: dict[int, str], dtype: str) -> DatasetInfo:
    """The dataset's declaration: this call's bands for a new dataset, else the existing dataset's bands with this
    domain's differing names/wavelengths as an override; classes must agree."""
    if previous is None:
        return DatasetInfo(name=args.name or args.output_dir.resolve().name, band_names=args.band_names,
                           wavelengths=args.wavelengths, id2label=id2label, dtype=dtype, tile_size=args.tile_size,
                           nodata=args.nodata, description=args.description)
    if len(args.band_names) != len(previous.band_names):
        raise ValueError(f"expected {len(previous.band_names)} bands like the dataset ({previous.band_names}), found "
                         f"{len(args.band_names)} ({args.band_names}).")
    if id2label != previous.id2label:
        raise ValueError(f"expected the dataset's classes {previous.id2label}, found {id2label}.")
    domain_bands = dict(previous.domain_bands)
    if (args.band_names, args.wavelengths) != (previous.band_names, previous.wavelengths):
        domain_bands[args.domain] = {"band_names": args.band_names, "wavelengths": args.wavelengths}
    return DatasetInfo(name=previous.name, band_names=previous.band_names, wavelengths=previous.wavelengths,
                       id2label=id2label, dtype=dtype, tile_size=args.tile_size,
                       nodata=args.nodata if args.nodata is not None else previous.nodata,
                       domain_bands=domain_bands, description=args.description or previous.description)


def make_decoder(args, mapping: dict, colours: bool, pad_value):
    def decode(item: Item):
        image = read_image(item.image, args.band_names, nodata=args.nodata)
        if colours:
            raw = read_colour_label(item.label)
            check_same_size(image, raw, item.image, item.label)
            label = decode_palette(raw, mapping, item.label)
        else:
            raw = read_index_label(item.label)
            check_same_size(image, raw, item.image, item.label)
            label = remap_index_label(raw, mapping, item.label)
        return padded_tiles(image, label, args.tile_size, item.key, item.domain, pad_value)

    return decode


def main(argv=None):
    args = parse_arguments(argv)
    id2label, mapping, colours = label_spec(args)
    pairs = pair_files(list_files(args.images), list_files(args.labels), prefix_match=True)
    items = [Item(key, image, label, args.domain) for key, image, label in pairs]
    if not items:
        raise FileNotFoundError(f"{args.images}: expected image files ({', '.join(('.tif', '.png', '.jpg'))}), found "
                                f"none.")
    previous = previous_metadata(args.output_dir)
    info = dataset_info(args, previous, id2label, str(read_raster(items[0].image).dtype))
    split = split_name(args, split_states(args.output_dir) if args.output_dir.is_dir() else {})
    pad_value = info.nodata if info.nodata is not None else 0
    decode = make_decoder(args, mapping, colours, pad_value)
    options = {"label_mapping": sorted(mapping.items()), "band_names": args.band_names}
    metadata = build_dataset(args.output_dir, info, {split: items}, decode, args.items_per_shard, exclusive=False,
                             previous=previous, options=options)
    finish(args, metadata)


if __name__ == "__main__":
    main()
