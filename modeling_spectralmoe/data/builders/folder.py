r"""Users' own data (any sensor) as a dataset of our schema, one domain per call, appended to one dataset.

    spectralmoe-build-folder --images DIR --labels DIR [--band-names NIR R G B [--wavelengths 0.83 0.665 0.56 0.49]
        | --bands FILE] (--label-map FILE | --class-names NAME ...) --domain NAME \
        --output-dir OUT [--role source|validation|target] [--tile-size 512] [--nodata VALUE]

Images: GeoTIFF (read with rasterio) or PNG/JPEG (pillow), all with the same bands in the same order and one dtype.
Labels: files of the same names (a label may add a suffix such as `_label`) in --labels, either index labels or, with
a palette label map, RGB colour labels.

Bands, in this order of precedence: `--band-names` (and `--wavelengths`, micrometres); `--bands FILE`, a JSON/YAML
file (a list of names or of `{name, wavelength}` entries, or `{band_names: [...], wavelengths: [...]}`), a CSV file
with the columns `name` and optionally `wavelength`, or an ENVI header (`band names`, `wavelength`, `wavelength
units`); else the first GeoTIFF's band descriptions (and its bands' `wavelength` / `wavelength_units` tags).

Labels to classes:
- `--class-names A B C`: codes 1..K are the classes A, B, C... (-> 0..K-1) and 0 is ignored (the usual protocol).
- `--label-map FILE` (YAML/JSON): raw value -> class name or `ignore`, classes numbered in order of first appearance
  (several values may share a name). Keys are codes (`3: building`) or RGB colours (`"0,0,255": building`).
Any other value found in a label is refused.

No-data: a pixel is valid only where every band is valid: not masked by the file (its nodata tag, an internal mask,
an alpha band), not NaN, and not equal to `--nodata`. Invalid pixels are stored with the dataset's no-data value in
every band (`--nodata`, else the first image's nodata tag, else NaN for float data) and label 255, so statistics,
training and evaluation leave them out. Integer data with masked pixels but no no-data value is refused.

Roles: the first call (no `train` split yet) defaults to `--role source` -> split `train`; later calls default to
`--role target` -> split `target_<domain>`; `--role validation` -> `validation`; a call for a domain already in the
dataset defaults to that domain's split (an interrupted call rerun resumes it). Every call must give the same dtype,
tile size and classes. Band names or wavelengths that differ from the dataset's (e.g. NIR-R-G next to R-G-B) are
recorded for that domain in the metadata (`domain_bands`); another band count (e.g. a 12-band target next to a 48-band
source) needs wavelengths on both sides, for wavelength-conditioned encoders (DOFA). Statistics come from the `train`
split. Images are tiled to --tile-size (at least 64) with padded edge tiles (image: the no-data value or 0, label
255). Rerunning a call resumes it.
"""

import argparse
import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import yaml

from .common import (
    IGNORE_INDEX, MIN_TILE_SIZE, DatasetInfo, Item, _rasterio, build_dataset, check_band_count, check_same_size,
    decode_palette, exit_on_input_error, finish, list_files, pair_files, padded_tiles, read_colour_label,
    read_index_label, read_raster_validity, remap_index_label, shifted_codes, split_states,
)
from ..schema import METADATA_FILE, SpectralMetadata


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True)
    bands = parser.add_mutually_exclusive_group()
    bands.add_argument("--band-names", nargs="+", help="default: from --bands or the GeoTIFFs' band descriptions")
    bands.add_argument("--bands", type=Path, help="JSON/YAML/CSV file or ENVI header with band names (wavelengths)")
    parser.add_argument("--wavelengths", nargs="+", type=float, help="band centres in micrometres")
    classes = parser.add_mutually_exclusive_group(required=True)
    classes.add_argument("--label-map", type=Path, help="YAML/JSON: label value (code or 'R,G,B') -> class / ignore")
    classes.add_argument("--class-names", nargs="+", help="classes of codes 1..K (0 = ignore)")
    parser.add_argument("--domain", required=True, help="name of this domain, e.g. the sensor or region")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--role", choices=["source", "validation", "target"],
                        help="default: source for the first domain, then target")
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--nodata", type=float, help="raw no-data value: a pixel holding it in any band is no-data")
    parser.add_argument("--name", help="dataset name (default: the output folder's name)")
    parser.add_argument("--description", default="")
    parser.add_argument("--items-per-shard", type=int, default=64)
    parser.add_argument("--push-to-hub", metavar="REPO")
    args = parser.parse_args(argv)
    if args.wavelengths is not None and args.band_names is None:
        parser.error("--wavelengths needs --band-names (or give both in a --bands file).")
    if args.tile_size < MIN_TILE_SIZE:
        parser.error(f"--tile-size must be at least {MIN_TILE_SIZE} (the smallest input SpectralMoE's decoder "
                     f"takes), found {args.tile_size}; smaller images are padded to the tile size.")
    return args


def band_list(args, first_image: Path) -> tuple[list[str], list[float] | None]:
    """`(band_names, wavelengths)` from the command line, a `--bands` file or the first image's band descriptions."""
    if args.band_names is not None:
        names, wavelengths, where = args.band_names, args.wavelengths, "--wavelengths"
    elif args.bands is not None:
        (names, wavelengths), where = read_band_file(args.bands), str(args.bands)
    else:
        (names, wavelengths), where = band_descriptions(first_image), str(first_image)
    if wavelengths is not None and len(wavelengths) != len(names):
        raise ValueError(f"{where}: expected one wavelength per band ({len(names)}), found {len(wavelengths)}.")
    if wavelengths is not None and max(wavelengths) > 100:
        raise ValueError(f"{where}: expected wavelengths in micrometres, found values up to {max(wavelengths)} "
                         "(nanometres? divide by 1000, or state the unit in the file).")
    return list(names), wavelengths


def read_band_file(path: Path) -> tuple[list[str], list[float] | None]:
    """Band names and wavelengths (micrometres) from a JSON/YAML, CSV or ENVI header file."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        if not rows or "name" not in rows[0]:
            raise ValueError(f"{path}: expected a CSV header with the column 'name' (and 'wavelength'), found "
                             f"{list(rows[0]) if rows else 'no rows'}.")
        entries = [{"name": row["name"], "wavelength": row.get("wavelength") or None} for row in rows]
    elif suffix == ".hdr":
        return _envi_bands(path)
    else:
        with open(path) as handle:
            loaded = json.load(handle) if suffix == ".json" else yaml.safe_load(handle)
        if isinstance(loaded, dict) and "band_names" in loaded:
            return [str(n) for n in loaded["band_names"]], _floats(loaded.get("wavelengths"))
        if not isinstance(loaded, list) or not loaded:
            raise ValueError(f"{path}: expected a list of bands or a mapping with 'band_names', found {loaded!r}.")
        entries = [entry if isinstance(entry, dict) else {"name": entry} for entry in loaded]
    names = [str(entry.get("name", "")).strip() for entry in entries]
    if not all(names):
        raise ValueError(f"{path}: expected a name for every band, found {names}.")
    wavelengths = [entry.get("wavelength") for entry in entries]
    return names, None if all(w is None for w in wavelengths) else _floats(wavelengths, path)


def _envi_bands(path: Path) -> tuple[list[str], list[float] | None]:
    """`band names`, `wavelength` and `wavelength units` of an ENVI header (values in braces)."""
    fields = dict(re.findall(r"^\s*([\w ]+?)\s*=\s*(\{[^}]*\}|[^\n]*)", path.read_text(), flags=re.MULTILINE))
    fields = {key.lower(): value.strip().strip("{}") for key, value in fields.items()}
    if "band names" not in fields:
        raise ValueError(f"{path}: expected an ENVI header with 'band names', found the fields {sorted(fields)}.")
    names = [name.strip() for name in fields["band names"].split(",")]
    wavelengths = [w for w in fields.get("wavelength", "").split(",") if w.strip()] or None
    return names, _in_micrometres(_floats(wavelengths, path), fields.get("wavelength units", ""))


def band_descriptions(image: Path) -> tuple[list[str], list[float] | None]:
    """A GeoTIFF's band descriptions as names, and its bands' `wavelength` tags (with `wavelength_units`)."""
    if image.suffix.lower() not in (".tif", ".tiff"):
        raise ValueError(f"{image}: expected --band-names or --bands for a {image.suffix} image (only GeoTIFFs "
                         "describe their bands).")
    with _rasterio().open(image) as source:
        names = list(source.descriptions)
        tags = [source.tags(band) for band in source.indexes]
    if not all(names):
        raise ValueError(f"{image}: expected a description for every band (or --band-names / --bands), found "
                         f"{names}.")
    wavelengths = [tag.get("wavelength") for tag in tags]
    if any(w is None for w in wavelengths):
        return names, None
    return names, _in_micrometres(_floats(wavelengths, image), tags[0].get("wavelength_units", ""))


def _floats(values, path: Path | None = None) -> list[float] | None:
    if values is None:
        return None
    try:
        return [float(value) for value in values]
    except (TypeError, ValueError):
        raise ValueError(f"{path}: expected a number as every wavelength, found {list(values)}.") from None


def _in_micrometres(wavelengths: list[float] | None, unit: str) -> list[float] | None:
    scale = {"nanometers": 1e-3, "nanometres": 1e-3, "nm": 1e-3}.get(unit.strip().lower(), 1.0)
    return None if wavelengths is None else [round(value * scale, 6) for value in wavelengths]


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


def dataset_info(args, previous: SpectralMetadata | None, bands: tuple[list[str], list[float] | None],
                 id2label: dict[int, str], dtype: str, nodata_tag: float | None) -> DatasetInfo:
    """The dataset's declaration: this call's bands for a new dataset, else the existing dataset's bands with this
    domain's differing names/wavelengths (or band count) as an override; classes must agree."""
    band_names, wavelengths = bands
    if previous is None:
        nodata = args.nodata if args.nodata is not None else nodata_tag
        if nodata is None and np.dtype(dtype).kind == "f":
            nodata = math.nan  # float data: NaN marks no-data without taking a value a valid pixel may hold
        return DatasetInfo(name=args.name or args.output_dir.resolve().name, band_names=band_names,
                           wavelengths=wavelengths, id2label=id2label, dtype=dtype, tile_size=args.tile_size,
                           nodata=nodata, description=args.description)
    if id2label != previous.id2label:
        raise ValueError(f"expected the dataset's classes {previous.id2label}, found {id2label}.")
    domain_bands = dict(previous.domain_bands)
    if (band_names, wavelengths) != (previous.band_names, previous.wavelengths):
        domain_bands[args.domain] = {"band_names": band_names, "wavelengths": wavelengths}
    if len(band_names) != len(previous.band_names) and (wavelengths is None or previous.wavelengths is None):
        raise ValueError(f"expected {len(previous.band_names)} bands like the dataset ({previous.band_names}), found "
                         f"{len(band_names)} ({band_names}); another band count needs wavelengths for this domain "
                         "and the dataset (for a wavelength-conditioned encoder such as DOFA).")
    nodata = previous.nodata if previous.nodata is not None else args.nodata
    return DatasetInfo(name=previous.name, band_names=previous.band_names, wavelengths=previous.wavelengths,
                       id2label=id2label, dtype=dtype, tile_size=args.tile_size, nodata=nodata,
                       domain_bands=domain_bands, description=args.description or previous.description)


def read_valid_image(path: Path, band_names: list[str], nodata: float | None) -> tuple[np.ndarray, np.ndarray]:
    """An image checked against the band list, and its (H, W) validity: every band valid for the file (nodata tag,
    masks), not NaN and not equal to `nodata` (`--nodata`)."""
    image, valid, _ = read_raster_validity(path)
    check_band_count(image, len(band_names), path, band_names)
    if image.dtype.kind == "f":
        infinite = int(np.isinf(image).sum())
        if infinite:
            raise ValueError(f"{path}: expected finite values or NaN (no-data), found {infinite} infinite values.")
        valid &= ~np.isnan(image).any(axis=0)
    if nodata is not None and not math.isnan(nodata):
        valid &= ~(image == nodata).any(axis=0)
    return image, valid


def mark_nodata(image: np.ndarray, label: np.ndarray, valid: np.ndarray, fill: float | None, path: Path) -> None:
    """Invalid pixels get `fill` in every band (what statistics, training and evaluation recognise) and label 255."""
    if valid.all():
        return
    if fill is None:
        raise ValueError(f"{path}: {int((~valid).sum())} pixels are no-data (masked by the file or NaN), but the "
                         "dataset has no no-data value to store them with; pass --nodata VALUE (a value no valid "
                         "pixel takes).")
    image[:, ~valid] = fill
    label[~valid] = IGNORE_INDEX


def make_decoder(args, band_names: list[str], mapping: dict, colours: bool, fill: float | None):
    def decode(item: Item):
        image, valid = read_valid_image(item.image, band_names, args.nodata)
        if colours:
            raw = read_colour_label(item.label)
            check_same_size(image, raw, item.image, item.label)
            label = decode_palette(raw, mapping, item.label)
        else:
            raw = read_index_label(item.label)
            check_same_size(image, raw, item.image, item.label)
            label = remap_index_label(raw, mapping, item.label)
        mark_nodata(image, label, valid, fill, item.image)
        return padded_tiles(image, label, args.tile_size, item.key, item.domain, 0 if fill is None else fill)

    return decode


@exit_on_input_error
def main(argv=None):
    args = parse_arguments(argv)
    id2label, mapping, colours = label_spec(args)
    pairs = pair_files(list_files(args.images), list_files(args.labels), prefix_match=True)
    items = [Item(key, image, label, args.domain) for key, image, label in pairs]
    if not items:
        raise FileNotFoundError(f"{args.images}: expected image files ({', '.join(('.tif', '.png', '.jpg'))}), found "
                                f"none.")
    bands = band_list(args, items[0].image)
    first_image, _, nodata_tag = read_raster_validity(items[0].image)
    previous = previous_metadata(args.output_dir)
    info = dataset_info(args, previous, bands, id2label, str(first_image.dtype), nodata_tag)
    split = split_name(args, split_states(args.output_dir) if args.output_dir.is_dir() else {})
    decode = make_decoder(args, bands[0], mapping, colours, info.nodata)
    options = {"label_mapping": sorted(mapping.items()), "band_names": bands[0]}
    metadata = build_dataset(args.output_dir, info, {split: items}, decode, args.items_per_shard, exclusive=False,
                             previous=previous, options=options)
    finish(args, metadata)


if __name__ == "__main__":
    main()
