"""Adapter cost relative to the frozen ViT it plugs into, measured in one run.

Prints forward+backward time of the SpectralMoE adapter (training mode, non-zero weights, E=6, m=100, r=16) divided by
that of one frozen transformers DINOv3 layer of the same width (gradient w.r.t. its input only, as in training), for
the paper form and for the released code's form. Run: `python bench/bench_adapter.py [--threads 2]`.
"""

import argparse
import statistics
import time

import torch
from transformers import DINOv3ViTConfig
from transformers.models.dinov3_vit.modeling_dinov3_vit import DINOv3ViTLayer, DINOv3ViTRopePositionEmbedding

from modeling_spectralmoe import SpectralMoEAdapter


def median_seconds(step, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def frozen_layer_step(width: int, grid: int, batch: int):
    config = DINOv3ViTConfig(hidden_size=width, intermediate_size=4 * width, num_attention_heads=width // 64,
                             num_register_tokens=4)
    config._attn_implementation = "sdpa"  # what DINOv3ViTModel picks by default
    layer = DINOv3ViTLayer(config).eval().requires_grad_(False)
    rope = DINOv3ViTRopePositionEmbedding(config).eval()(torch.empty(1, 3, grid * 16, grid * 16))
    tokens = torch.randn(batch, 5 + grid * grid, width, requires_grad=True)

    def step():
        layer(tokens, position_embeddings=rope).sum().backward()

    return step


def adapter_step(width: int, grid: int, batch: int, **form):
    torch.manual_seed(0)
    adapter = SpectralMoEAdapter(num_layers=1, hidden_size=width, num_experts=6, expert_rank=16,
                                 num_expert_tokens=100, **form).train()
    with torch.no_grad():
        for parameter in (adapter.experts_b, adapter.gate_prototypes, adapter.noise_weights):
            parameter.normal_(std=0.02)
    visual = torch.randn(batch, grid * grid, width, requires_grad=True)  # patch tokens: the host keeps its prefix
    depth = torch.randn(batch, grid * grid, width)

    def step():
        output = adapter(visual, 0, depth, grid_size=(grid, grid))
        (output.hidden_states.sum() + output.aux_loss).backward()

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--grid", type=int, default=32, help="patch grid side: 32 -> N = 1024 patch tokens")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = (args.width, args.grid, args.batch)
    layer_time = median_seconds(frozen_layer_step(*sizes), args.repeats)
    forms = {
        "paper (dot_product + cross_attention)": {},
        "official (official_sum_product + official_diagonal)": dict(
            perceptual_map="official_sum_product", fusion="official_diagonal"
        ),
    }
    print(f"D={args.width}, N={args.grid ** 2}, B={args.batch}, threads={args.threads}, E=6, m=100, r=16, train mode")
    print(f"frozen DINOv3 layer fwd+bwd: {layer_time * 1e3:.1f} ms")
    for name, form in forms.items():
        adapter_time = median_seconds(adapter_step(*sizes, **form), args.repeats)
        print(f"adapter {name}: {adapter_time * 1e3:.1f} ms, ratio {adapter_time / layer_time:.3f}")


if __name__ == "__main__":
    main()
