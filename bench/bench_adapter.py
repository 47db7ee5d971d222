"""Every adapter type's cost relative to the frozen ViT layer it plugs into, measured in one run.

For each registered adapter type (training mode, non-zero weights, the paper's sizes: E=6, m=100, r=16; LoRA r=8,
AdaptFormer 64, VPT 150) prints forward+backward time divided by that of one frozen transformers DINOv3 layer of
the same width (gradient w.r.t. its input only, as in training). Methods after a layer are timed alone; methods
inside a layer are timed as the frozen layer with the method attached minus the frozen layer. SpectralMoE is timed
in the paper's form and in the released code's. Run: `python bench/bench_adapter.py [--threads 2]`.
"""

import argparse
import statistics
import time

import torch
from transformers import DINOv3ViTConfig, Dinov2Config

from modeling_spectralmoe import SpectralMoEConfig
from modeling_spectralmoe.configuration_spectralmoe import ADAPTER_TYPES
from modeling_spectralmoe.visual_encoder_families import build_visual_encoder
from modeling_spectralmoe.modeling_spectralmoe import ADAPTERS

IN_LAYER = ("lora", "dora", "adaptformer", "vpt")


def median_seconds(step, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def one_layer_config(width: int, adapter_type: str, **form) -> SpectralMoEConfig:
    visual = DINOv3ViTConfig(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=1,
                             num_attention_heads=width // 64, num_register_tokens=4)
    visual._attn_implementation = "sdpa"  # what DINOv3ViTModel picks by default
    depth = Dinov2Config(hidden_size=width, num_hidden_layers=1, num_attention_heads=width // 64)
    return SpectralMoEConfig(backbone=None, depth_backbone=None, backbone_config=visual, depth_backbone_config=depth,
                             adapter_type=adapter_type, id2label={0: "a"}, **form)


def randomize(parameters) -> None:
    """Non-zero values where the initialisation is zero, so every path computes."""
    with torch.no_grad():
        for parameter in parameters:
            if not parameter.any():
                parameter.normal_(std=0.02)


def layer_step(encoder, tokens, layer_kwargs):
    def step():
        encoder.run_layer(0, tokens, layer_kwargs).sum().backward()

    return step


def adapter_step(adapter, grid: int, batch: int, width: int):
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
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    encoder = build_visual_encoder(one_layer_config(args.width, "frozen")).requires_grad_(False)
    pixels = torch.zeros(args.batch, 3, args.grid * 16, args.grid * 16)
    tokens, layer_kwargs = encoder.embed(pixels)
    tokens = torch.randn_like(tokens).requires_grad_(True)
    layer_time = median_seconds(layer_step(encoder, tokens, layer_kwargs), args.repeats)
    print(f"D={args.width}, N={args.grid ** 2}, B={args.batch}, threads={args.threads}, train mode")
    print(f"frozen DINOv3 layer fwd+bwd: {layer_time * 1e3:.1f} ms")
    forms = {f"{name}": (name, {}) for name in ADAPTER_TYPES}
    forms["spectralmoe (released form)"] = ("spectralmoe", dict(perceptual_map="official_sum_product",
                                                                  fusion="official_diagonal"))
    print(f"{'adapter':32s} {'ms':>8s} {'ratio':>7s}")
    for label, (adapter_type, form) in forms.items():
        config = one_layer_config(args.width, adapter_type, **form)
        adapter = ADAPTERS[adapter_type].from_config(config).train()
        if adapter_type in IN_LAYER:
            host = build_visual_encoder(config).requires_grad_(False)
            host.load_state_dict(encoder.state_dict())
            adapter.attach(host)
            injected = set(adapter.encoder_parameter_names())  # LoRA's A and B live in the encoder
            randomize([*adapter.parameters(), *(p for n, p in host.model.named_parameters() if n in injected)])
            # Paired with a fresh measurement of the plain layer: the difference is small next to run-to-run drift.
            plain = median_seconds(layer_step(encoder, tokens, layer_kwargs), args.repeats)
            seconds = median_seconds(layer_step(host, tokens, layer_kwargs), args.repeats) - plain
        else:
            randomize(adapter.parameters())
            seconds = median_seconds(adapter_step(adapter, args.grid, args.batch, args.width), args.repeats)
        print(f"{label:32s} {seconds * 1e3:8.1f} {seconds / layer_time:7.3f}")


if __name__ == "__main__":
    main()
