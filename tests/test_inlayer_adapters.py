"""LoRA / DoRA (peft), AdaptFormer and VPT-deep: methods acting inside the frozen layers, attached with hooks."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import DINOv3ViTModel

from modeling_spectralmoe import SpectralMoEConfig, SpectralMoEForSemanticSegmentation

from .conftest import randomize_adapter, tiny_config

VIT_L = dict(backbone="facebook/dinov3-vitl16-pretrain-lvd1689m", depth_backbone=None, fusion="none",
             id2label={i: str(i) for i in range(24)})


def build(tiny_encoders, adapter_type, **overrides):
    torch.manual_seed(0)
    model = SpectralMoEForSemanticSegmentation(tiny_config(*tiny_encoders, adapter_type=adapter_type, **overrides))
    model.load_pretrained_encoders()
    randomize_adapter(model)
    return model.eval()


def trainable_count(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    "adapter_type, backbone, expected",
    [("lora", "facebook/dinov3-vitl16-pretrain-lvd1689m", 786_432), ("lora", "earthflow/DOFA/DOFA_ViT_large_e100.pth",
     786_432), ("adaptformer", "facebook/dinov3-vitl16-pretrain-lvd1689m", 3_171_840),
     ("vpt", "facebook/dinov3-vitl16-pretrain-lvd1689m", 3_686_400)],
    ids=["lora-dinov3-q-v", "lora-dofa-fused-qkv", "adaptformer-64", "vpt-150"],
)
def test_parameter_counts_at_vit_l(adapter_type, backbone, expected):
    bands = {"wavelengths": [0.83, 0.665, 0.56, 0.49]} if "DOFA" in backbone else {}
    with torch.device("meta"):
        model = SpectralMoEForSemanticSegmentation(SpectralMoEConfig(**{**VIT_L, "backbone": backbone},
                                                                     adapter_type=adapter_type, **bands))
    query_table = 100 * 256
    head = sum(p.numel() for p in model.decode_head.parameters())
    assert trainable_count(model) - head - query_table == expected
    assert model.num_parameters(only_trainable=True) == trainable_count(model)


def test_lora_equals_merged_weights_and_round_trips(tiny_encoders, tmp_path):
    model = build(tiny_encoders, "lora")
    pixel_values = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        adapted = model(pixel_values=pixel_values).logits
    # The frozen encoders equal the source file after loading: LoRA wraps q/v as base_layer.
    source = DINOv3ViTModel.from_pretrained(tiny_encoders[0]).state_dict()
    encoder_state = model.visual_encoder.model.state_dict()
    for key, value in source.items():
        ours = key.replace("q_proj.", "q_proj.base_layer.").replace("v_proj.", "v_proj.base_layer.")
        assert torch.equal(encoder_state[ours], value), key
    # Hand-merged weights: W + (alpha / r) B A in a plain DINOv3 give the adapted model's tokens.
    scaling = model.config.lora_alpha / model.config.lora_rank
    plain = DINOv3ViTModel.from_pretrained(tiny_encoders[0]).eval()
    with torch.no_grad():
        for index, layer in enumerate(plain.model.layer):
            for name in ("q_proj", "v_proj"):
                injected = model.visual_encoder.model.model.layer[index].attention.get_submodule(name)
                delta = injected.lora_B["default"].weight @ injected.lora_A["default"].weight
                getattr(layer.attention, name).weight += scaling * delta
        reference = plain(pixel_values).last_hidden_state
        adapted_tokens = model.visual_encoder.model(pixel_values).last_hidden_state
        base = DINOv3ViTModel.from_pretrained(tiny_encoders[0]).eval()(pixel_values).last_hidden_state
    torch.testing.assert_close(adapted_tokens, reference, atol=1e-5, rtol=0)
    assert (adapted_tokens - base).abs().max() > 1e-3
    # Adapter-only save: the lora_* tensors travel with the adapter; the encoders reload from their checkpoints.
    model.save_pretrained(tmp_path)
    saved = set(load_file(tmp_path / "model.safetensors"))
    assert any("lora_A" in key for key in saved) and not any("base_layer" in key for key in saved)
    reloaded = SpectralMoEForSemanticSegmentation.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=pixel_values).logits, adapted, rtol=0, atol=1e-6)


def test_adaptformer_equals_a_hand_written_layer(tiny_encoders):
    model = build(tiny_encoders, "adaptformer")
    adapter, encoder = model.adapter, model.visual_encoder
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        tokens, kwargs = encoder.embed(pixel_values)
        hooked = encoder.run_layer(0, tokens, kwargs)
        adapter.detach()  # the hand-written layer calls the layer's modules, whose hooks would add the branch
        plain = encoder.run_layer(0, tokens, kwargs)
        layer = encoder.layers[0]
        attended, _ = layer.attention(layer.norm1(tokens), position_embeddings=kwargs["position_embeddings"])
        x_mid = tokens + layer.layer_scale1(attended)
        branch = adapter.scale * adapter.up[0](torch.relu(adapter.down[0](x_mid)))
        expected = x_mid + layer.layer_scale2(layer.mlp(layer.norm2(x_mid))) + branch
    torch.testing.assert_close(hooked, expected, atol=1e-5, rtol=0)
    assert (plain - expected).abs().max() > 1e-4  # detached: the frozen layer alone


def test_vpt_runs_each_layer_on_prefix_prompts_patches(tiny_encoders):
    model = build(tiny_encoders, "vpt", vpt_num_prompts=3)
    adapter, encoder = model.adapter, model.visual_encoder
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        tokens, kwargs = encoder.embed(pixel_values)
        prompted = torch.cat([tokens[:, :5], adapter.prompts[1].unsqueeze(0), tokens[:, 5:]], dim=1)
        adapter.detach()
        by_hand = encoder.run_layer(1, prompted, kwargs)  # RoPE on the last N tokens: the patches only
        adapter.attach(encoder)
        hooked = encoder.run_layer(1, tokens, kwargs)
    assert hooked.shape == tokens.shape
    torch.testing.assert_close(hooked, torch.cat([by_hand[:, :5], by_hand[:, 8:]], dim=1), atol=1e-6, rtol=0)


def test_training_checkpoints_keep_the_injected_lora_weights(tiny_encoders):
    from modeling_spectralmoe.trainer.trainer import _drop_frozen_weights

    model = build(tiny_encoders, "lora")
    weights = [model.state_dict()]
    _drop_frozen_weights([model], weights, None)
    kept = set(weights[0])
    assert kept == set(model.trained_state_dict())
    assert any("lora_B" in name for name in kept) and not any("base_layer" in name for name in kept)
