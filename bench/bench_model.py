"""Cost of SpectralMoE fine-tuning relative to training only a Mask2Former head on a frozen backbone, in one run.

Both train the same head on the same frozen DINOv3 features; SpectralMoE adds the depth encoder (forward only), the
adapter after every layer and the backward pass through the frozen layers. Prints time per training step and peak
memory (each variant in a fresh process) and their ratios to the head-only baseline, also for SpectralMoE with
activation checkpointing of the frozen layers. Random weights (timing does not depend on them).
Run: `python bench/bench_model.py [--width 384 --layers 12 --size 256]`.
"""

import argparse
import multiprocessing
import resource
import statistics
import time

import torch
from transformers import DINOv3ViTConfig, Dinov2Config

from modeling_spectralmoe import SpectralMoEConfig, SpectralMoEForSemanticSegmentation


VARIANTS = {
    "frozen backbone + head": dict(fusion="none"),
    "SpectralMoE": {},
    "SpectralMoE, checkpointed layers": dict(frozen_activation_checkpointing=True),
}


def build(args, **overrides) -> SpectralMoEForSemanticSegmentation:
    heads = args.width // 64
    config = SpectralMoEConfig(
        backbone=None, depth_backbone=None,
        backbone_config=DINOv3ViTConfig(hidden_size=args.width, intermediate_size=4 * args.width,
                                        num_hidden_layers=args.layers, num_attention_heads=heads,
                                        num_register_tokens=4),
        depth_backbone_config=Dinov2Config(hidden_size=args.width, num_hidden_layers=args.layers,
                                           num_attention_heads=heads, patch_size=14, image_size=518),
        num_channels=4, depth_rgb_bands=[1, 2, 3], id2label={i: str(i) for i in range(args.classes)}, **overrides,
    )
    torch.manual_seed(0)
    return SpectralMoEForSemanticSegmentation(config).train()


def training_step(name: str, args):
    model = build(args, **VARIANTS[name])
    pixel_values = torch.randn(args.batch, 4, args.size, args.size)
    labels = torch.randint(0, args.classes, (args.batch, args.size, args.size))
    if name != "frozen backbone + head":
        return lambda: model(pixel_values=pixel_values, labels=labels).loss.backward()
    queries = torch.nn.Parameter(torch.zeros(model.config.num_queries, model.config.decoder_hidden_dim))
    model.adapter.forward = lambda hidden, *rest, **options: (hidden, hidden.new_zeros(()))  # plain frozen features

    def head_only():
        with torch.no_grad():
            features = model.encode(pixel_values)[0]
        model.decode_head.loss(model.decode_head(features, queries), labels).backward()

    return head_only


def measure(name: str, args) -> tuple[float, float]:
    """Median seconds per step and peak resident memory (MiB) of one variant; run in a fresh process."""
    torch.set_num_threads(args.threads)
    step = training_step(name, args)
    step()  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    results = {}
    for name in VARIANTS:
        with context.Pool(1) as pool:
            results[name] = pool.apply(measure, (name, args))
    base_time, base_memory = results["frozen backbone + head"]
    print(f"width {args.width}, {args.layers} layers, batch {args.batch} x 4 bands x {args.size}^2, "
          f"{args.threads} threads, E=6, m=100, 12544 points; time and peak RSS relative to frozen backbone + head")
    for name, (seconds, memory) in results.items():
        print(f"{name:<34}{seconds:7.2f} s/step ({seconds / base_time:4.2f}x)  peak RSS {memory:7.0f} MiB "
              f"({memory / base_memory:4.2f}x)")


if __name__ == "__main__":
    main()
