"""Memory and overhead of whole-scene prediction (`predict_raster`), in one run; each measurement in a fresh process.

(a) peak RSS minus RSS after loading the model, on a 2048 x 8192 scene over a 2048 x 2048 one (goal <= 1.2: the strips
    make memory independent of the scene's height);
(b) peak RSS on an 8192 x 8192 scene over a 2048 x 2048 one (goal <= 1.3: the strip buffers grow with the width only);
(c) `predict_raster` time over the model's own forward time on the same windows of the 2048 x 2048 scene (goal
    <= 1.15: reading, normalising, blending and writing COGs cost little next to the model).

The model has a random ViT-S/16-sized encoder (width 384, 12 layers) and a light Mask2Former head (which makes the
overhead ratio stricter than the paper's heavy head would). Scenes are random uint8, 3 bands, UTM.
Run: `python bench/bench_predict.py [--layers 12 --window 512 --stride 341 --memory-stride 341]`.
"""

import argparse
import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def build_model(args):
    from transformers import DINOv3ViTConfig

    from modeling_spectralmoe import SpectralMoEConfig, SpectralMoEForSemanticSegmentation

    config = SpectralMoEConfig(
        backbone=None, depth_backbone=None, fusion="none", num_channels=3,
        backbone_config=DINOv3ViTConfig(hidden_size=384, intermediate_size=1536, num_hidden_layers=args.layers,
                                        num_attention_heads=6, num_register_tokens=4),
        id2label={index: f"class {index}" for index in range(6)}, decoder_hidden_dim=64, decoder_num_heads=4,
        pixel_decoder_layers=1, pixel_decoder_ffn_dim=128, decoder_layers=3, decoder_ffn_dim=128, num_queries=16,
        num_expert_tokens=16,
    )
    torch.manual_seed(0)
    return SpectralMoEForSemanticSegmentation(config).eval()


def write_scene(path: Path, height: int, width: int) -> str:
    import rasterio
    from rasterio.transform import from_origin

    profile = dict(driver="GTiff", height=height, width=width, count=3, dtype="uint8", crs="EPSG:32632",
                   transform=from_origin(500000, 5000000, 10, 10), tiled=True, blockxsize=512, blockysize=512)
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as target:
        for top in range(0, height, 512):
            rows = min(512, height - top)
            window = rasterio.windows.Window(0, top, width, rows)
            target.write(rng.integers(0, 256, (3, rows, width), dtype=np.uint8), window=window)
    return str(path)


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(kind: str, args, scene: str, output: str, stride: int, queue) -> None:
    """In a fresh process: RSS after loading, then peak RSS and seconds of a prediction (`kind="predict"`) or of
    the model alone on the same windows (`kind="forward"`)."""
    from modeling_spectralmoe import SpectralMoEImageProcessor
    from modeling_spectralmoe.inference.predict import predict_raster

    torch.set_num_threads(args.threads)
    model, processor = build_model(args), SpectralMoEImageProcessor()
    loaded = rss_mb()
    if kind == "predict":
        start = time.perf_counter()
        predict_raster(model, processor, scene, output, window=args.window, stride=stride,
                       batch_size=args.batch_size, progress=False, overwrite=True)
        seconds = time.perf_counter() - start
    else:
        seconds = forward_seconds(model, processor, scene, args.window, stride, args.batch_size)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"loaded": loaded, "peak": peak, "seconds": seconds})


def forward_seconds(model, processor, scene: str, window: int, stride: int, batch_size: int) -> float:
    """Time of the model's forward passes alone over the windows `predict_raster` runs (read and normalised
    beforehand, batched the same way: by row of windows)."""
    import rasterio

    from modeling_spectralmoe.inference.windows import WindowGrid

    with rasterio.open(scene) as source:
        bands = source.read()
    pixel_values = processor(bands, input_data_format="channels_first")["pixel_values"]
    grid = WindowGrid(*pixel_values.shape[-2:], window, stride)
    seconds = 0.0
    with torch.inference_mode():
        for row in grid.rows():
            windows = [pixel_values[:, :, top : top + h, left : left + w] for top, left, h, w in row]
            for start in range(0, len(windows), batch_size):
                batch = torch.cat(windows[start : start + batch_size])
                began = time.perf_counter()
                model(pixel_values=batch)
                seconds += time.perf_counter() - began
    return seconds


def run(kind: str, args, scene: str, output: str, stride: int) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=measure, args=(kind, args, scene, output, stride, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--stride", type=int, default=341, help="stride of the overhead measurement (c)")
    parser.add_argument("--memory-stride", type=int, default=341,
                        help="stride of the memory measurements (a, b); 512 runs 2.3 times fewer windows")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        scenes = {name: write_scene(folder / f"{name}.tif", *size)
                  for name, size in {"2048x2048": (2048, 2048), "2048x8192": (8192, 2048),
                                     "8192x8192": (8192, 8192)}.items()}
        results = {}
        for name in scenes:
            results[name] = run("predict", args, scenes[name], str(folder / "out"), args.memory_stride)
            print(f"{name} (width x height), stride {args.memory_stride}: RSS after loading "
                  f"{results[name]['loaded']:.0f} MB, peak {results[name]['peak']:.0f} MB, "
                  f"{results[name]['seconds']:.1f} s", flush=True)
        overhead = run("predict", args, scenes["2048x2048"], str(folder / "out"), args.stride)
        forward = run("forward", args, scenes["2048x2048"], str(folder / "out"), args.stride)
    small, tall, wide = (results[name] for name in ("2048x2048", "2048x8192", "8192x8192"))
    growth = (tall["peak"] - tall["loaded"]) / (small["peak"] - small["loaded"])
    print(f"(a) peak RSS above loading, 2048 x 8192 over 2048 x 2048: {growth:.2f} (goal <= 1.2)")
    print(f"(b) peak RSS, 8192 x 8192 over 2048 x 2048: {wide['peak'] / small['peak']:.2f} (goal <= 1.3)")
    print(f"(c) predict_raster time over the model's forward time on the same windows (stride {args.stride}): "
          f"{overhead['seconds']:.1f} s / {forward['seconds']:.1f} s = {overhead['seconds'] / forward['seconds']:.2f} "
          "(goal <= 1.15)")


if __name__ == "__main__":
    main()
