"""Shared test helpers: reference tensors and real data from ../shared (tests skip when it is absent)."""

import importlib
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GOLDEN = SHARED / "golden"
REAL_DATA = SHARED / "data" / "real"

torch.set_num_threads(2)


def pytest_terminal_summary(terminalreporter) -> None:
    """A checkout without ../shared skips the golden and real-data tests: say so once, not only per skipped test."""
    if not SHARED.is_dir():
        terminalreporter.write_line(f"NOTE: {SHARED} is absent: the golden and real-data tests were skipped (see "
                                    "the skips above); they need the shared reference data beside the checkout.")


def golden_tensors(name: str) -> dict[str, torch.Tensor]:
    """The tensors of `../shared/golden/<name>.safetensors`, or a skip when the folder is absent."""
    path = GOLDEN / f"{name}.safetensors"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return load_file(path)


def real_data_dir(*parts: str) -> Path:
    """A folder of `../shared/data/real`, or a skip when it is absent."""
    path = REAL_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


def optional_import(module: str):
    """`module`, imported; a skip when it does not import, but a failure under CI (`CI` set), whose install has it.
    (timm's import fails with a RuntimeError, not an ImportError, where its torchvision does not match torch.)"""
    try:
        return importlib.import_module(module)
    except (ImportError, RuntimeError) as error:
        require_optional(False, f"{module} does not import ({error}); .ci/run installs it")


def require_optional(available: bool, message: str) -> None:
    """Skips when an optional resource (a module, a browser) is missing, but fails under CI: CI cannot pass by
    skipping."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


TINY_LABELS = {0: "impervious", 1: "building", 2: "vegetation"}


def save_random_model(path: Path, seed: int, model_class, config) -> str:
    """`model_class(config)` with random weights drawn after `torch.manual_seed(seed)`, saved like a Hub checkpoint."""
    torch.manual_seed(seed)
    model_class(config).save_pretrained(path)
    return str(path)


def save_tiny_dinov3(path: Path, seed: int = 0) -> str:
    """A 4-layer DINOv3 (patch 16, cls + 4 registers, width 32) with random weights, saved like a Hub checkpoint."""
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    config = DINOv3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                             patch_size=16, num_register_tokens=4, image_size=64)
    return save_random_model(path, seed, DINOv3ViTModel, config)


def save_tiny_depth_model(path: Path, seed: int = 1) -> str:
    """A Prompt Depth Anything model around a 4-layer DINOv2 (patch 14, width 32) with random weights."""
    from transformers import Dinov2Config, PromptDepthAnythingConfig, PromptDepthAnythingForDepthEstimation

    torch.manual_seed(seed)
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, patch_size=14, image_size=56,
                            out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    config = PromptDepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32,
                                       neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8)
    PromptDepthAnythingForDepthEstimation(config).save_pretrained(path)
    return str(path)


def save_tiny_dofa(path: Path, seed: int = 2) -> str:
    """A 4-layer DOFA (patch 16, cls token, width 32) with random weights, saved with `save_pretrained`."""
    from modeling_spectralmoe import DOFAConfig, DOFAModel

    config = DOFAConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, patch_size=16,
                        image_size=64, wavelength_embed_dim=32, num_weight_tokens=16, weight_generator_ffn_dim=64)
    return save_random_model(path, seed, DOFAModel, config)


def save_tiny_dinov2(path: Path, seed: int = 3, patch_size: int = 16, image_size: int = 64) -> str:
    """A 4-layer DINOv2 (cls token, width 32) with random weights, saved like a Hub checkpoint."""
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, mlp_ratio=2,
                          patch_size=patch_size, image_size=image_size, layerscale_value=0.5)
    return save_random_model(path, seed, Dinov2Model, config)


def save_tiny_clip(path: Path, seed: int = 4, patch_size: int = 16, image_size: int = 64) -> str:
    """A full CLIP model (text and 4-layer vision towers, width 32) with random weights, saved like the
    `openai/clip-vit-*` checkpoints; SpectralMoE uses its vision tower."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64,
                bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                  patch_size=patch_size, image_size=image_size)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(path)
    return str(path)


def save_tiny_eva02(path: Path, seed: int = 6, patch_size: int = 16, image_size: int = 64) -> str:
    """A 4-layer EVA02 (cls token, RoPE, SwiGLU, width 32) with random weights, saved with `save_pretrained`."""
    from modeling_spectralmoe import EVA02Config, EVA02Model

    config = EVA02Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                         patch_size=patch_size, image_size=image_size, pretrain_grid_size=4)
    return save_random_model(path, seed, EVA02Model, config)


def save_tiny_sam(path: Path, seed: int = 5, image_size: int = 64) -> str:
    """A full SAM model whose image encoder has 4 layers (width 32, windows of 2 x 2 patches, global attention in
    layers 1 and 3), saved like `facebook/sam-vit-*`; its absolute and relative position tables (zero at
    initialisation) are random, so that every position path shows in the outputs."""
    from transformers import SamConfig, SamModel

    torch.manual_seed(seed)
    vision = dict(hidden_size=32, output_channels=16, num_hidden_layers=4, num_attention_heads=2, mlp_dim=64,
                  image_size=image_size, patch_size=16, window_size=2, global_attn_indexes=[1, 3])
    decoder = dict(hidden_size=16, iou_head_hidden_dim=16, mlp_dim=32, num_attention_heads=2)
    config = SamConfig(vision_config=vision, prompt_encoder_config=dict(hidden_size=16), mask_decoder_config=decoder)
    model = SamModel(config)
    with torch.no_grad():
        for name, parameter in model.vision_encoder.named_parameters():
            if name.endswith(("pos_embed", "rel_pos_h", "rel_pos_w")):
                parameter.normal_(0, 0.5)
    model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_encoders(tmp_path_factory) -> tuple[str, str]:
    """Paths of a tiny DINOv3 and a tiny depth model, named like Hub checkpoints are."""
    root = tmp_path_factory.mktemp("encoders")
    return save_tiny_dinov3(root / "dinov3"), save_tiny_depth_model(root / "depth")


def tiny_config(visual_path: str, depth_path: str, **overrides):
    """A SpectralMoE config small enough for CPU tests: E=3, r=4, m=8 queries, width-32 head, 256 points."""
    from modeling_spectralmoe import SpectralMoEConfig

    settings = dict(
        backbone=visual_path, depth_backbone=depth_path, num_channels=3, id2label=TINY_LABELS, num_experts=3,
        expert_rank=4, num_expert_tokens=8, num_queries=8, decoder_hidden_dim=32, decoder_num_heads=4,
        pixel_decoder_layers=1, pixel_decoder_ffn_dim=32, decoder_layers=2, decoder_ffn_dim=32, train_num_points=256,
    )
    settings.update(overrides)
    return SpectralMoEConfig(**settings)


def randomize_adapter(model, seed: int = 0) -> None:
    """Non-zero values for every trained tensor that starts at zero (expert and token factors, routers, LoRA's B,
    AdaptFormer's up projection, ...) and a visible residual scale, so that every input path reaches the logits."""
    generator = torch.Generator().manual_seed(seed)
    adapter = model.adapter
    injected = set(adapter.encoder_parameter_names())
    trained = [*adapter.named_parameters(), *((n, p) for n, p in model.visual_encoder.model.named_parameters()
                                              if n in injected)]
    with torch.no_grad():
        for _, parameter in trained:
            if not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
        if isinstance(getattr(adapter, "scale", None), torch.nn.Parameter):  # token methods' residual scale
            adapter.scale.fill_(0.5)


def random_tokens(batch=2, prefix=5, patches=9, width=16, seed=1) -> tuple[torch.Tensor, torch.Tensor]:
    """Visual tokens (B, prefix + N, D) and depth tokens (B, 1 + N, D) of one layer, for adapter tests."""
    generator = torch.Generator().manual_seed(seed)
    visual = torch.randn(batch, prefix + patches, width, generator=generator)
    depth = torch.randn(batch, 1 + patches, width, generator=generator)
    return visual, depth


def run_adapter(adapter, visual, depth, layer, prefix, depth_prefix=1, output_router_probs=False):
    """Calls an adapter on whole token sequences as the host does: prefix tokens split off (and put back unchanged),
    patch tokens adapted. Returns `(tokens, aux_loss)`, plus `router_probs` when asked."""
    patches = visual[:, prefix:]
    depth_patches = None if depth is None else depth[:, depth_prefix:]
    side = int(patches.shape[1] ** 0.5)
    output = adapter(patches, layer, depth_patches, grid_size=(side, patches.shape[1] // side),
                     output_router_probs=output_router_probs)
    tokens = torch.cat([visual[:, :prefix], output.hidden_states], dim=1)
    return (tokens, output.aux_loss, output.router_probs) if output_router_probs else (tokens, output.aux_loss)


def assert_only_adapter_and_head_train(model) -> None:
    """After a backward pass: adapter and head parameters (and those the adapter injected into the encoder, and the
    depth projection) are trainable, every frozen one is not and got no gradient."""
    injected = {f"visual_encoder.model.{name}" for name in model.adapter.encoder_parameter_names()}
    for name, parameter in model.named_parameters():
        trainable = name.startswith(("adapter.", "decode_head.", "depth_projection.")) or name in injected
        assert parameter.requires_grad == trainable, name
        if not trainable:
            assert parameter.grad is None, name


# Session-scoped: the tiny dataset and one reference training run serve the tests of several files.
from .training_fixtures import reference_run, tiny_dataset  # noqa: E402, F401

