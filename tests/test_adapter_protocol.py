"""One adapter protocol for every method: each registered adapter type on each encoder family."""

from pathlib import Path

import pytest
import torch

from modeling_spectralmoe import SpectralMoEForSemanticSegmentation
from modeling_spectralmoe.adapter_protocol import AdapterOutput
from modeling_spectralmoe.modeling_spectralmoe import ADAPTERS
from modeling_spectralmoe.trainer.optimization import build_optimizer

from .conftest import (
    assert_only_adapter_and_head_train, randomize_adapter, save_tiny_depth_model, save_tiny_dinov3, save_tiny_dofa,
    tiny_config,
)


HOSTS = {"dinov3": (save_tiny_dinov3, {}, 5), "dofa": (save_tiny_dofa, {"wavelengths": [0.83, 0.665, 0.56, 0.49]}, 1)}
# What each method trains without weight decay (the authors' recipe), besides the head's norms and embeddings.
ADAPTER_NO_DECAY = {
    "spectralmoe": {"experts_a", "experts_b", "gate_prototypes", "noise_weights", "scale"},
    "rein": {"tokens_a", "tokens_b", "scale"},
    "depthforge": {"tokens_a", "tokens_b", "scale"},
    "frozen": {"query_position"},
    "set": {"tokens_a", "tokens_b", "amplitude_tokens", "scale"},
    "fada": {"tokens_a", "tokens_b", "high_tokens_a", "high_tokens_b", "scale"},
    "lora": {"query_position"},
    "dora": {"query_position"},
    "adaptformer": {"query_position"},
    "vpt": {"query_position", "prompts"},
}
CASES = [(host, adapter_type) for host in HOSTS for adapter_type in ADAPTERS]


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol")
    return {host: save(root / host) for host, (save, _, _) in HOSTS.items()}, save_tiny_depth_model(root / "depth")


def test_every_adapter_type_has_its_no_decay_declaration():
    assert set(ADAPTERS) == set(ADAPTER_NO_DECAY)


@pytest.mark.parametrize("host, adapter_type", CASES, ids=[f"{h}-{a}" for h, a in CASES])
def test_adapter_protocol(encoders, host, adapter_type):
    visual_paths, depth_path = encoders
    _, bands, num_prefix_tokens = HOSTS[host]
    config = tiny_config(visual_paths[host], depth_path, adapter_type=adapter_type, num_channels=4,
                         depth_rgb_bands=[1, 2, 3], **bands)
    model = SpectralMoEForSemanticSegmentation(config)
    model.load_pretrained_encoders()
    randomize_adapter(model)
    model.train()
    encoder = model.visual_encoder
    assert encoder.num_prefix_tokens == num_prefix_tokens

    layer_outputs, layer_inputs, adapter_outputs = [], [], []
    handles = [model.adapter.register_forward_hook(lambda module, args, output: adapter_outputs.append(output))]
    for layer in encoder.layers:
        handles.append(layer.register_forward_pre_hook(lambda module, args: layer_inputs.append(args[0])))
        handles.append(layer.register_forward_hook(lambda module, args, output: layer_outputs.append(output)))
    pixel_values = torch.randn(2, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 3, (2, 64, 64), generator=torch.Generator().manual_seed(1))
    outputs = model(pixel_values=pixel_values, labels=labels, output_router_probs=True)
    for handle in handles:
        handle.remove()

    assert len(adapter_outputs) == len(encoder.adapter_sites) == len(encoder.layers)
    for output in adapter_outputs:
        assert isinstance(output, AdapterOutput) and output.hidden_states.shape == (2, 16, 32)
        assert output.aux_loss.shape == ()
    # The host owns its prefix tokens: what enters layer l + 1 has layer l's prefix tokens, untouched.
    for produced, consumed in zip(layer_outputs, layer_inputs[1:]):
        assert torch.equal(consumed[:, :num_prefix_tokens], produced[:, :num_prefix_tokens])
    routed = adapter_type == "spectralmoe"
    assert (outputs.visual_router_probs is not None) == routed

    outputs.loss.backward()
    assert_only_adapter_and_head_train(model)

    declared = model.no_weight_decay()
    assert {name[len("adapter."):] for name in declared if name.startswith("adapter.")} == ADAPTER_NO_DECAY[
        adapter_type]
    head_norms = {
        f"decode_head.{module_name}.{name}" for module_name, module in model.decode_head.named_modules()
        if isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm)) for name, _ in module.named_parameters()
    }
    assert head_norms and head_norms <= declared
    optimizer = build_optimizer(model)
    no_decay = [group for group in optimizer.param_groups if group["weight_decay"] == 0.0]
    named = dict(model.named_parameters())
    assert {id(p) for p in no_decay[0]["params"]} == {id(named[name]) for name in declared}
    frozen = {name: p.detach().clone() for name, p in named.items() if not p.requires_grad}
    optimizer.step()
    assert all(torch.equal(named[name], value) for name, value in frozen.items())


def readme_block(heading: str) -> str:
    """The first python block under a README heading."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index(heading):]
    return section[section.index("```python") + len("```python"):].split("```")[0]


def test_readme_adapter_on_your_own_vit_runs():
    namespace = {}
    exec(readme_block("## Use the adapter on your own ViT"), namespace)
    tokens, adapted, adapter = namespace["tokens"], namespace["adapted"], namespace["adapter"]
    assert tokens.shape == (2, 1 + 14 * 14, 64) and isinstance(adapted, AdapterOutput)
    assert adapted.aux_loss.shape == () and torch.isfinite(tokens).all()
    tokens.sum().backward()  # gradients reach the adapter through every layer
    assert adapter.delta_f.weight.grad is not None and adapter.delta_f.weight.grad.abs().sum() > 0
