"""Whole-scene prediction: any GeoTIFF (or other GDAL raster) to georeferenced class, confidence, probability and
expert-routing maps, in memory bounded by one strip of windows, one process or many.

    spectralmoe-predict MODEL INPUT [INPUT ...] --output DIR [--bands 4,3,2,8 | --bands B04,B03,B02,B08]
        [--window 512] [--stride 341] [--blend cosine|mean|gaussian|center] [--batch-size 4] [--num-workers 2]
        [--outputs classes,confidence,probabilities,experts] [--expert-layers 5,11] [--quiet] ...

INPUT: files, folders (their .tif/.tiff/.png/.jp2/.vrt files), globs, or @list.txt (one input per line). Under
`torchrun --nproc_per_node N` (or `accelerate launch`) rank r predicts scenes r, r + N, ...; `--ray-actors N` maps
the scenes over a Ray Data actor pool instead (`pip install 'spectralmoe[ray]'`).
"""

import argparse
import glob
import hashlib
import importlib.metadata
import json
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import transformers
from tqdm.auto import tqdm

from ..image_processing_spectralmoe import SpectralMoEImageProcessor
from ..modeling_spectralmoe import SpectralMoEForSemanticSegmentation
from .bands import band_processor, normalize_window, resolve_bands, warn_about_units
from .outputs import OUTPUT_KINDS, expert_output, output_specs, pixel_outputs, token_validity
from .raster import SceneWriter, WindowReader, library_versions, read_scene_info, write_json_atomically
from .windows import BLENDS, WindowGrid, column_blocks, stream_window_scores


RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jp2", ".vrt", ".img")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
GATE_KINDS = ("spectral", "depth")


@dataclass
class PredictConfig:
    """Settings of scene prediction.

    Args:
        bands (`list[int]` or `list[str]`, *optional*): 1-based band indexes or names (matched against the file's
            band descriptions) in the model's order; default: the model's bands by name when the file names its
            bands, else every band in file order.
        wavelengths (`list[float]`, *optional*): wavelengths (micrometres) of the selected bands, for a
            wavelength-conditioned model (DOFA) seeing another sensor; default: the band file's, then the file's.
        band_file (`str`, *optional*): JSON with `band_names`, `mean`, `std` (and `wavelengths`) of a band set other
            than the model's (e.g. a dataset's `spectral_metadata.json`).
        window (`int`, defaults to 512): window side, a multiple of the patch size.
        stride (`int`, defaults to 341): window step (the paper's); a multiple of the patch size with experts.
        blend (`str`, defaults to `"cosine"`): `"mean"` (the paper's protocol), `"cosine"`, `"gaussian"`, `"center"`.
        batch_size (`int`, defaults to 4): windows per forward pass.
        num_workers (`int`, defaults to 0): DataLoader processes reading windows (each with its own file handle).
        device (`str`, *optional*): default CUDA when available, else CPU.
        amp (`str`, *optional*): `"bf16"` or `"fp16"` autocast.
        outputs (`tuple[str]`, defaults to `("classes", "confidence")`): any of `OUTPUT_KINDS`.
        expert_layers (`list[int]`, *optional*): encoder layers whose routing maps `experts` holds; default every
            adapted layer.
        nodata (`float`, *optional*): a raw value that marks no-data in any band, besides the file's masks, per-band
            nodata and NaN.
        column_block_width (`int`, defaults to 16384): wider scenes are predicted in blocks of window columns about
            this wide (same result, memory bounded in width too).
        cog (`bool`, defaults to `True`): finish outputs as Cloud-Optimized GeoTIFFs with overviews.
        compress (`str`, defaults to `"zstd"`): GeoTIFF compression.
        overwrite (`bool`, defaults to `False`): predict scenes again even when complete outputs exist. Without it,
            a scene whose sidecar is complete with the same settings is skipped, an unfinished one is redone, and
            one finished with other settings is an error.
        progress (`bool`, defaults to `True`): a progress bar over windows.
    """

    bands: list | None = None
    wavelengths: list | None = None
    band_file: str | None = None
    window: int = 512
    stride: int = 341
    blend: str = "cosine"
    batch_size: int = 4
    num_workers: int = 0
    device: str | None = None
    amp: str | None = None
    outputs: tuple = ("classes", "confidence")
    expert_layers: list | None = None
    nodata: float | None = None
    column_block_width: int = 16384
    cog: bool = True
    compress: str = "zstd"
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self):
        self.outputs = tuple(self.outputs)
        unknown = [kind for kind in self.outputs if kind not in OUTPUT_KINDS]
        if unknown or not self.outputs:
            raise ValueError(f"`outputs` must be some of {OUTPUT_KINDS}, found {self.outputs}.")
        if self.blend not in BLENDS:
            raise ValueError(f"`blend` must be one of {BLENDS}, found {self.blend!r}.")
        if self.amp is not None and self.amp not in AUTOCAST_DTYPES:
            raise ValueError(f"`amp` must be one of {tuple(AUTOCAST_DTYPES)} or None, found {self.amp!r}.")
        if self.batch_size < 1 or self.num_workers < 0:
            raise ValueError(f"`batch_size` must be positive and `num_workers` non-negative, found "
                             f"{self.batch_size}, {self.num_workers}.")

    def result_settings(self) -> dict:
        """The settings that change the outputs (what a resumed run must share)."""
        ignored = {"num_workers", "device", "overwrite", "progress", "column_block_width"}
        return {key: value for key, value in asdict(self).items() if key not in ignored}

    def check_grid(self, patch_size: int) -> None:
        """Window sides must fit the patch grid; expert maps need every window start on it too."""
        if self.window % patch_size:
            raise ValueError(f"The window ({self.window}) must be a multiple of the patch size {patch_size}, e.g. "
                             f"{max(patch_size, self.window // patch_size * patch_size)}.")
        if "experts" in self.outputs and self.stride % patch_size:
            raise ValueError(
                f"Expert maps need a stride that is a multiple of the patch size {patch_size} (routing is per token "
                f"and the token grids of overlapping windows must coincide); found {self.stride}, use "
                f"{max(patch_size, self.stride // patch_size * patch_size)}."
            )


@dataclass
class PredictResult:
    """What `predict_raster` did for one scene.

    Args:
        input_path (`str`): the scene.
        paths (`dict[str, str]`): output path by kind, plus `"sidecar"`.
        windows (`int`): windows of the grid (column-block halos counted once per block).
        skipped_windows (`int`): windows without a valid pixel, not predicted.
        seconds (`float`): wall time of this call.
        resumed (`bool`): the scene was already complete with the same settings; nothing was computed.
    """

    input_path: str
    paths: dict = field(default_factory=dict)
    windows: int = 0
    skipped_windows: int = 0
    seconds: float = 0.0
    resumed: bool = False


def load_model(model, processor=None, device: str | None = None):
    """A model in eval mode on `device` and its processor, from objects or a saved folder / Hub id."""
    if isinstance(model, (str, os.PathLike)):
        processor = processor or SpectralMoEImageProcessor.from_pretrained(model)
        model = SpectralMoEForSemanticSegmentation.from_pretrained(model)
    if processor is None:
        processor = SpectralMoEImageProcessor.from_pretrained(model.config.name_or_path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.eval().to(device), processor


def predict_raster(model, processor, input_path, output_dir, config: PredictConfig | None = None,
                   **settings) -> PredictResult:
    """Predicts one raster into `output_dir`: `<stem>_classes.tif`, `<stem>_confidence.tif` (and
    `_probabilities.tif`, `_experts.tif` when asked) with the input's CRS, transform, size and nodata, plus the
    `<stem>.json` sidecar (provenance, statistics, settings, timing) that a rerun uses to skip the scene.

    Args:
        model: a `SpectralMoEForSemanticSegmentation`, or a saved folder / Hub id.
        processor: its `SpectralMoEImageProcessor` (loaded from the model's folder when `None`).
        input_path: any raster GDAL reads.
        output_dir: where the outputs go (created).
        config: a `PredictConfig`, or its fields as keyword arguments.
    """
    config = config or PredictConfig(**settings)
    start = time.perf_counter()
    model, processor = load_model(model, processor, config.device)
    input_path, output_dir = str(input_path), Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(input_path).stem
    info = read_scene_info(input_path)
    if not info.georeferenced:
        warnings.warn(f"{input_path} has no CRS: its outputs will have none either.", stacklevel=2)
    bands = resolve_bands(model.config, info, input_path, config.bands, config.wavelengths, config.band_file,
                          model.visual_encoder.wavelength_conditioned)
    processor = band_processor(processor, bands)
    warn_about_units(info, processor, input_path)
    patch_size = model.visual_encoder.patch_size
    config.check_grid(patch_size)
    expert_layers = _expert_layers(model, config) if "experts" in config.outputs else []
    expert_bands = [f"layer {layer} {kind} gate" for layer in expert_layers for kind in _gate_kinds(model)]
    specs = output_specs(output_dir, stem, config.outputs, model.config.id2label, patch_size, expert_bands)
    sidecar_path = output_dir / f"{stem}.json"
    provenance = _provenance(model, processor, bands, config)
    if _is_complete(sidecar_path, specs, provenance["settings_hash"], config.overwrite):
        return PredictResult(input_path, {**_paths(specs), "sidecar": str(sidecar_path)}, resumed=True)
    for stale in output_dir.glob(f"{glob.escape(stem)}_*.partial"):
        stale.unlink()

    height = -(-info.height // patch_size) * patch_size  # the processor's padding: windows fit the patch grid
    width = -(-info.width // patch_size) * patch_size
    grids = (WindowGrid(height, width, config.window, config.stride, config.blend),)
    if expert_layers:
        grids += (grids[0].coarsened(patch_size),)
    reader = WindowReader(input_path, bands.indexes, config.nodata)
    writer = SceneWriter(info, specs, config.compress, config.cog)
    counts = {"windows": 0, "skipped_windows": 0}
    try:
        with torch.inference_mode(), tqdm(total=len(grids[0]), desc=stem, unit="window", leave=False,
                                          disable=not config.progress) as bar:
            for block_grids, first, end in column_blocks(grids, config.column_block_width):
                strips = _stream_block(model, processor, reader, bands, block_grids, config, expert_layers, counts,
                                       bar)
                for strip in strips:
                    _write_strip(writer, reader, info, strip if expert_layers else (strip,), block_grids[0], first,
                                 end, patch_size, config.outputs, specs)
        paths = writer.finish()
    finally:
        writer.close()
        reader.close()
    seconds = time.perf_counter() - start
    write_json_atomically(sidecar_path, {
        **provenance, "complete": True, "input": input_path, "size": [info.height, info.width],
        "crs": info.crs.to_string() if info.crs else None, "outputs": {k: Path(p).name for k, p in paths.items()},
        "expert_bands": expert_bands, **counts, "seconds": round(seconds, 3),
        "device": next(model.parameters()).device.type,
    })
    return PredictResult(input_path, {**paths, "sidecar": str(sidecar_path)}, seconds=seconds, **counts)


class _WindowDataset(torch.utils.data.Dataset):
    """Normalised windows (1, C, h, w) of one block of a raster, row-major; `None` for windows without a valid
    pixel."""

    def __init__(self, reader: WindowReader, processor, positions: list, column_offset: int):
        self.reader, self.processor, self.positions, self.column_offset = reader, processor, positions, column_offset

    def __len__(self):
        return len(self.positions)

    def __getitem__(self, index):
        top, left, height, width = self.positions[index]
        raw, valid = self.reader.read(top, left + self.column_offset, height, width)
        return normalize_window(self.processor, raw, valid) if valid.any() else None


def _identity(item):
    return item


def _stream_block(model, processor, reader, bands, grids, config, expert_layers, counts, bar):
    """Blended strips of one column block: windows read ahead by a DataLoader, scored in batches."""
    positions = [position for row in grids[0].rows() for position in row]
    # A reader of its own: workers fork from this process, which must not hand them its open GDAL handle.
    window_reader = WindowReader(reader.path, reader.indexes, reader.nodata)
    loader = torch.utils.data.DataLoader(
        _WindowDataset(window_reader, processor, positions, grids[0].column_offset), batch_size=None,
        num_workers=config.num_workers, collate_fn=_identity,
    )
    windows = iter(loader)

    def read_window(top, left, height, width):
        pixels = next(windows)
        counts["windows"] += 1
        counts["skipped_windows"] += pixels is None
        bar.update(1)
        return pixels

    score_windows = _window_scorer(model, bands.model_kwargs, config.amp, expert_layers)
    grid = grids if expert_layers else grids[0]
    return stream_window_scores(score_windows, read_window, grid, config.batch_size)


def _window_scorer(model, model_kwargs: dict, amp: str | None, expert_layers: list[int]):
    """windows (N, C, h, w) -> class scores (N, K, h, w), and with expert layers also their gates on the token grid
    (N, bands x E, h / p, w / p), float32 on the CPU."""
    device = next(model.parameters()).device
    adapted = sorted(model.visual_encoder.adapter_sites)
    patch_size = model.visual_encoder.patch_size

    def score_windows(windows: torch.Tensor):
        with torch.autocast(device.type, dtype=AUTOCAST_DTYPES.get(amp), enabled=amp is not None):
            output = model(pixel_values=windows.to(device), output_router_probs=bool(expert_layers), **model_kwargs)
        scores = output.logits.float().cpu()
        if not expert_layers:
            return scores
        if output.visual_router_probs is None:
            raise ValueError(f"This model's {type(model.adapter).__name__} routes nothing: it has no expert maps.")
        gates = []
        for layer in expert_layers:
            position = adapted.index(layer)
            gates += [output.visual_router_probs[position]]
            gates += [output.depth_router_probs[position]] if output.depth_router_probs is not None else []
        rows, columns = windows.shape[-2] // patch_size, windows.shape[-1] // patch_size
        tokens = [gate.float().cpu().transpose(1, 2).reshape(len(windows), -1, rows, columns) for gate in gates]
        return scores, torch.cat(tokens, dim=1)

    return score_windows


def _write_strip(writer, reader, info, strip, grid, first, end, patch_size, outputs, specs):
    """Writes the final rows of one strip, columns `[first, end)` of the image, of every output."""
    first_row, scores, _ = strip[0]
    rows = min(scores.shape[-2] if scores is not None else 0, grid.height - first_row)
    if rows <= 0:  # no window ran yet: nothing but no-data, which is what GDAL reads where nothing was written
        return
    offset = grid.column_offset
    valid = reader.read_valid(first_row, first, rows, end - first)  # on the padded grid: beyond the file invalid
    height, width = min(rows, info.height - first_row), min(end, info.width) - first
    if height > 0 and width > 0:
        block_scores = torch.nan_to_num(scores[0, :, :height, first - offset : first - offset + width])
        for name, array in pixel_outputs(block_scores, valid[:height, :width], outputs,
                                         specs["classes"].nodata if "classes" in specs else 0).items():
            writer.write(name, array, first_row, first)
    if "experts" in outputs:
        token_first_row, gates, _ = strip[1]
        token_offset, token_first = offset // patch_size, first // patch_size
        token_height = min(gates.shape[-2], -(-info.height // patch_size) - token_first_row)
        token_width = min(end // patch_size, -(-info.width // patch_size)) - token_first
        token_valid = token_validity(valid, patch_size)[:token_height, :token_width]
        token_gates = gates[0, :, :token_height, token_first - token_offset : token_first - token_offset + token_width]
        num_experts = gates.shape[1] // specs["experts"].count
        writer.write("experts", expert_output(torch.nan_to_num(token_gates), token_valid, num_experts),
                     token_first_row, token_first)


def _expert_layers(model, config: PredictConfig) -> list[int]:
    adapted = sorted(model.visual_encoder.adapter_sites)
    layers = list(config.expert_layers) if config.expert_layers else adapted
    missing = [layer for layer in layers if layer not in adapted]
    if missing:
        raise ValueError(f"Layers {missing} carry no adapter; the adapted layers are {adapted}.")
    return layers


def _gate_kinds(model) -> tuple[str, ...]:
    return GATE_KINDS if getattr(model.adapter, "uses_depth", False) else GATE_KINDS[:1]


def _provenance(model, processor, bands, config: PredictConfig) -> dict:
    """The sidecar's description of the model, bands and settings, and the hash that decides resuming."""
    config_hash = hashlib.sha256(model.config.to_json_string(use_diff=False).encode()).hexdigest()
    band_record = {"indexes": bands.indexes, "names": bands.names, "wavelengths": bands.wavelengths}
    statistics = {"mean": list(processor.image_mean), "std": list(processor.image_std),
                  "nodata_value": processor.nodata_value}
    settings = config.result_settings()
    hashed = json.dumps([config_hash, band_record, statistics, settings], sort_keys=True, default=str)
    return {
        "model": {"name_or_path": str(model.config.name_or_path), "config_hash": config_hash,
                  "commit": getattr(model.config, "_commit_hash", None)},
        "bands": band_record, "statistics": statistics, "settings": settings,
        "class_names": [model.config.id2label[index] for index in sorted(model.config.id2label)],
        "settings_hash": hashlib.sha256(hashed.encode()).hexdigest(),
        "versions": {"spectralmoe": _package_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, **library_versions()},
    }


def _package_version() -> str:
    try:
        return importlib.metadata.version("spectralmoe")
    except importlib.metadata.PackageNotFoundError:  # a checkout on PYTHONPATH
        return "unknown"


def _is_complete(sidecar_path: Path, specs: dict, settings_hash: str, overwrite: bool) -> bool:
    """Whether the scene's outputs are complete with these settings (skip it); an error when they are complete with
    other settings and `overwrite` is off."""
    if overwrite or not sidecar_path.is_file():
        return False
    sidecar = json.loads(sidecar_path.read_text())
    if not sidecar.get("complete") or not all(spec.path.is_file() for spec in specs.values()):
        return False
    if sidecar.get("settings_hash") != settings_hash:
        raise ValueError(f"{sidecar_path} records a finished prediction with other settings or another model; pass "
                         "`overwrite=True` (--overwrite) to replace it.")
    return True


def _paths(specs: dict) -> dict[str, str]:
    return {name: str(spec.path) for name, spec in specs.items()}


def expand_inputs(inputs) -> list[str]:
    """Raster paths from files, folders, globs and `@list.txt` files, in the order given (folders sorted)."""
    paths = []
    for item in [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs:
        item = str(item)
        if item.startswith("@"):
            lines = Path(item[1:]).read_text().splitlines()
            paths += expand_inputs([line.strip() for line in lines if line.strip() and not line.startswith("#")])
        elif Path(item).is_dir():
            paths += sorted(str(path) for path in Path(item).iterdir() if path.suffix.lower() in RASTER_SUFFIXES)
        elif glob.has_magic(item):
            matches = sorted(glob.glob(item))
            if not matches:
                raise FileNotFoundError(f"No file matches {item!r}.")
            paths += matches
        elif Path(item).is_file() or item.startswith("/vsi"):
            paths.append(item)
        else:
            raise FileNotFoundError(f"No such input: {item!r}.")
    stems = [Path(path).stem for path in paths]
    clashes = sorted({stem for stem in stems if stems.count(stem) > 1})
    if clashes:
        raise ValueError(f"Several inputs share the names {clashes}; their outputs would overwrite each other.")
    return paths


def predict_scenes(model, processor, inputs, output_dir, rank: int = 0, world_size: int = 1, quiet: bool = False,
                   config: PredictConfig | None = None, **settings) -> list[PredictResult]:
    """Predicts every scene of `inputs` (see `expand_inputs`) whose position is `rank` modulo `world_size`: each
    process of a multi-process launch takes its own share, with no communication."""
    config = config or PredictConfig(**settings)
    scenes = expand_inputs(inputs)[rank::world_size]
    model, processor = load_model(model, processor, config.device)
    config = replace(config, progress=config.progress and not quiet)
    results = []
    for path in tqdm(scenes, desc="scenes", unit="scene", disable=quiet or len(scenes) < 2):
        result = predict_raster(model, processor, path, output_dir, config)
        results.append(result)
        if quiet:
            print(json.dumps(asdict(result)), flush=True)
    return results


def _process_position() -> tuple[int, int, str | None]:
    """(rank, world size, device) under torchrun / accelerate launch, which set these variables; (0, 1, None)
    otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size == 1:
        return 0, 1, None
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    return int(os.environ["RANK"]), world_size, device


def _list_of(kind):
    return lambda text: [kind(item) for item in text.split(",") if item]


def _bands(text: str) -> list:
    return [int(item) if item.isdigit() else item for item in text.split(",") if item]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="saved model folder or Hub id")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders, globs or @list.txt")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--bands", type=_bands, help="1-based indexes or names, comma-separated, in the model's order")
    parser.add_argument("--wavelengths", type=_list_of(float), help="micrometres, one per selected band (DOFA)")
    parser.add_argument("--band-file", help="JSON with band_names, mean, std (and wavelengths) of another band set")
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--stride", type=int, default=341)
    parser.add_argument("--blend", default="cosine", choices=BLENDS)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-workers", type=int, default=0, help="processes reading windows")
    parser.add_argument("--device")
    parser.add_argument("--amp", choices=tuple(AUTOCAST_DTYPES))
    parser.add_argument("--outputs", type=_list_of(str), default=["classes", "confidence"],
                        help=f"comma-separated, from {','.join(OUTPUT_KINDS)}")
    parser.add_argument("--expert-layers", type=_list_of(int), help="adapted layers of the expert maps (default all)")
    parser.add_argument("--nodata", type=float, help="raw value marking no-data, besides the file's own masks")
    parser.add_argument("--column-block-width", type=int, default=16384)
    parser.add_argument("--no-cog", action="store_true", help="keep tiled GeoTIFFs without overviews")
    parser.add_argument("--compress", default="zstd", choices=("zstd", "deflate", "lzw"))
    parser.add_argument("--overwrite", action="store_true", help="predict complete scenes again")
    parser.add_argument("--quiet", action="store_true", help="no progress bars; one JSON line per scene")
    parser.add_argument("--ray-actors", type=int, help="map the scenes over this many Ray actors")
    parser.add_argument("--ray-gpus-per-actor", type=float, default=0)
    args = parser.parse_args(argv)
    rank, world_size, device = _process_position()
    config = PredictConfig(
        bands=args.bands, wavelengths=args.wavelengths, band_file=args.band_file, window=args.window,
        stride=args.stride, blend=args.blend, batch_size=args.batch_size, num_workers=args.num_workers,
        device=args.device or device, amp=args.amp, outputs=tuple(args.outputs), expert_layers=args.expert_layers,
        nodata=args.nodata, column_block_width=args.column_block_width, cog=not args.no_cog, compress=args.compress,
        overwrite=args.overwrite, progress=not args.quiet,
    )
    if args.ray_actors:
        from .ray_predict import predict_with_ray

        for record in predict_with_ray(args.model, args.inputs, args.output, args.ray_actors,
                                       args.ray_gpus_per_actor, config):
            print(json.dumps(record), flush=True)
        return
    try:
        predict_scenes(args.model, None, args.inputs, args.output, rank, world_size, args.quiet, config)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()


__all__ = ["PredictConfig", "PredictResult", "expand_inputs", "load_model", "predict_raster", "predict_scenes"]
