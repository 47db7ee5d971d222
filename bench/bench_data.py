"""Is data loading the bottleneck? Tiles/s read from a dataset written by the builders' writer, next to the training
steps/s of a tiny SpectralMoE model, measured in one run.

Writes synthetic 512 x 512 tiles (4-band uint8, as Five-Billion-Pixels / FLAIR; 32-band uint16, as a hyperspectral
sensor) with the builders' shard writer into a temporary folder, loads them with `load_spectral_dataset` (the call
training makes) and times random-order row access `split[i]` plus the float32 conversion training applies, in the
format `load_spectral_dataset` returns (numpy, stored dtypes) and, for comparison, in plain `with_format("numpy")`
(every integer cast to int64). Then `model_step_throughput()` times forward + backward + optimizer step of a tiny
model on 4-band 512 x 512 batches. Run: `python bench/bench_data.py [--tiles 64] [--threads 2]`.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from modeling_spectralmoe.data.builders import common
from modeling_spectralmoe.data.schema import load_spectral_dataset


CASES = [("4-band uint8", 4, "uint8"), ("32-band uint16", 32, "uint16")]


def write_synthetic(folder: Path, bands: int, dtype: str, tiles: int) -> float:
    """A one-split dataset of `tiles` random tiles written with the builders' writer; returns tiles/s written."""
    info = common.DatasetInfo(name="bench", band_names=[f"b{i}" for i in range(bands)], id2label={0: "a", 1: "b"},
                              dtype=dtype, tile_size=512)
    rng = np.random.default_rng(0)
    high = 256 if dtype == "uint8" else 10000

    def decode(item):
        for index in range(item.extra["tiles"]):
            pixels = rng.integers(0, high, (bands, 512, 512), dtype=dtype)
            yield common.Tile(pixels, rng.integers(0, 2, (512, 512), dtype=np.uint8), f"t{index}", "synthetic")

    items = [common.Item("synthetic", Path("none"), Path("none"), "synthetic", {"tiles": tiles})]
    start = time.perf_counter()
    common.build_dataset(folder, info, {"train": items}, decode, items_per_shard=1)
    return tiles / (time.perf_counter() - start)


def read_rate(split, repeats: int = 3) -> float:
    """Tiles/s of random-order `split[i]` with the float32 conversion of training (median of `repeats` passes)."""
    order = np.random.default_rng(0).permutation(len(split))
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for index in order:
            example = split[int(index)]
            example["pixel_values"].astype(np.float32), example["label"].astype(np.int64)
        rates.append(len(order) / (time.perf_counter() - start))
    return statistics.median(rates)


def data_throughput(tiles: int) -> dict[str, float]:
    results = {}
    for name, bands, dtype in CASES:
        with tempfile.TemporaryDirectory() as folder:
            written = write_synthetic(Path(folder) / "dataset", bands, dtype, tiles)
            dataset, _ = load_spectral_dataset(Path(folder) / "dataset", cache_dir=str(Path(folder) / "cache"))
            split = dataset["train"]
            stored = split[0]["pixel_values"].dtype
            results[f"{name}: write"] = written
            results[f"{name}: read, load_spectral_dataset format ({stored})"] = read_rate(split)
            results[f"{name}: read, plain with_format('numpy') (int64)"] = read_rate(split.with_format("numpy"))
    return results


# ---- model hook ------------------------------------------------------------------------------------------------


def model_step_throughput(batch: int = 2, size: int = 512, repeats: int = 3) -> float | None:
    """HOOK: training steps/s of a tiny SpectralMoE (4 bands, `size` x `size`, batch `batch`), or None when
    `SpectralMoEForSemanticSegmentation` is not importable yet (then it prints that it is skipped)."""
    try:
        import torch
        from transformers import DINOv3ViTConfig, Dinov2Config

        from modeling_spectralmoe import SpectralMoEConfig, SpectralMoEForSemanticSegmentation
    except (ImportError, AttributeError) as error:
        print(f"model step throughput: skipped (SpectralMoEForSemanticSegmentation not importable: {error})")
        return None
    config = SpectralMoEConfig(
        backbone=None, depth_backbone=None,
        backbone_config=DINOv3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                        num_attention_heads=2, patch_size=16, num_register_tokens=4),
        depth_backbone_config=Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, patch_size=14),
        num_channels=4, depth_rgb_bands=[1, 2, 3], id2label={0: "a", 1: "b", 2: "c"}, num_experts=3, expert_rank=4,
        num_expert_tokens=8, num_queries=8, decoder_hidden_dim=32, decoder_num_heads=4, pixel_decoder_layers=1,
        pixel_decoder_ffn_dim=32, decoder_layers=2, decoder_ffn_dim=32, train_num_points=256,
    )
    torch.manual_seed(0)
    model = SpectralMoEForSemanticSegmentation(config).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    pixel_values = torch.randn(batch, 4, size, size)
    labels = torch.randint(0, 3, (batch, size, size))

    def step():
        optimizer.zero_grad()
        model(pixel_values=pixel_values, labels=labels).loss.backward()
        optimizer.step()

    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1 / statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=64, help="tiles per synthetic dataset")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the model step")
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    for name, rate in data_throughput(args.tiles).items():
        print(f"{name:<62} {rate:8.1f} tiles/s")
    import torch

    torch.set_num_threads(args.threads)
    steps = model_step_throughput(batch=args.batch)
    if steps is not None:
        print(f"{'tiny SpectralMoE training step (4 x 512 x 512, batch ' + str(args.batch) + ')':<62} {steps:8.2f} "
              f"steps/s = {steps * args.batch:.1f} tiles/s")


if __name__ == "__main__":
    main()
