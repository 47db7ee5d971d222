"""SpectralMoEForSemanticSegmentation on tiny random encoders saved to disk and named by path, as Hub ids are."""

import pytest
import torch
from transformers import AutoModelForSemanticSegmentation, DINOv3ViTConfig, DINOv3ViTModel

from modeling_spectralmoe import SpectralMoEConfig, SpectralMoEForSemanticSegmentation
from modeling_spectralmoe.frozen_encoders import expand_patch_kernel

from .conftest import assert_only_adapter_and_head_train, randomize_adapter, tiny_config


def build_model(tiny_encoders, **overrides):
    torch.manual_seed(0)
    model = SpectralMoEForSemanticSegmentation(tiny_config(*tiny_encoders, **overrides))
    model.load_pretrained_encoders()
    randomize_adapter(model)
    return model


def batch(num_channels=3, size=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(2, num_channels, size, size, generator=generator)
    labels = torch.randint(0, 3, (2, size, size), generator=generator)
    labels[:, :4] = 255
    return pixel_values, labels


FOUR_BANDS = dict(num_channels=4, band_names=["NIR", "R", "G", "B"], depth_rgb_bands=[1, 2, 3])


@pytest.mark.parametrize("bands", [{}, FOUR_BANDS], ids=["rgb", "nir-rgb"])
def test_forward_backward_reaches_only_trainable_parameters(tiny_encoders, bands):
    model = build_model(tiny_encoders, **bands).train()
    pixel_values, labels = batch(model.config.num_channels)
    outputs = model(pixel_values=pixel_values, labels=labels)
    assert outputs.logits is None  # training mode: the loss does not need full-resolution logits
    assert model(pixel_values=pixel_values, output_logits=True).logits.shape == (2, 3, 64, 64)
    assert outputs.class_queries_logits.shape == (2, 8, 4) and outputs.masks_queries_logits.shape == (2, 8, 16, 16)
    assert torch.isfinite(outputs.loss) and outputs.loss > outputs.aux_loss > 0
    outputs.loss.backward()
    assert_only_adapter_and_head_train(model)
    for name in ("transform.weight", "merge.weight", "experts_a", "experts_b", "gate_prototypes", "scale"):
        assert model.adapter.get_parameter(name).grad.abs().sum() > 0, name


def test_frozen_weights_are_bit_identical_after_an_optimizer_step(tiny_encoders):
    model = build_model(tiny_encoders).train()
    frozen = {
        name: tensor.clone() for name, tensor in model.state_dict().items()
        if name.startswith(("visual_encoder.", "depth_encoder."))
    }
    trainable = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(*batch()).loss.backward()
    optimizer.step()
    for name, tensor in model.state_dict().items():
        if name in frozen:
            assert torch.equal(tensor, frozen[name]), name
    assert any(not torch.equal(p, trainable[name]) for name, p in model.named_parameters() if p.requires_grad)


def test_frozen_encoders_stay_in_eval_mode(tiny_encoders):
    model = build_model(tiny_encoders).train()
    assert model.adapter.training and model.decode_head.training
    assert not any(module.training for encoder in model.frozen_encoders() for module in encoder.modules())


def test_depth_encoder_runs_exactly_once_per_forward(tiny_encoders):
    model = build_model(tiny_encoders)
    calls = []
    model.depth_encoder.model.embeddings.patch_embeddings.register_forward_hook(lambda *args: calls.append(1))
    model(*batch())
    assert len(calls) == 1


@pytest.mark.parametrize(
    "adapter, should_change",
    [
        (dict(fusion="cross_attention"), True),
        (dict(fusion="official_diagonal"), True),
        (dict(fusion="none"), False),
        (dict(adapter_type="depthforge"), True),
        (dict(adapter_type="rein"), False),
        (dict(adapter_type="frozen"), False),
    ],
    ids=["cross_attention", "official_diagonal", "no-fusion", "depthforge", "rein", "frozen"],
)
def test_logits_follow_the_depth_input_only_when_depth_is_used(tiny_encoders, adapter, should_change):
    pixel_values, labels = batch(4)
    model = build_model(tiny_encoders, **adapter, **FOUR_BANDS).eval()
    assert (model.depth_encoder is not None) == should_change
    with torch.no_grad():
        reference = model(pixel_values).logits
        model.config.depth_rgb_bands = [3, 2, 1]  # the depth model now sees other bands; the visual input is equal
        changed = model(pixel_values).logits
    assert (not torch.allclose(reference, changed, atol=1e-6)) == should_change
    model.train()(pixel_values=pixel_values, labels=labels).loss.backward()
    assert all(p.grad is None for p in model.visual_encoder.parameters())
    assert all(p.grad is not None for p in model.adapter.parameters())


def test_frozen_baseline_passes_the_plain_dinov3_features(tiny_encoders):
    model = build_model(tiny_encoders, adapter_type="frozen").eval()
    with torch.no_grad():
        features = model.encode(batch()[0])[0]
        reference = DINOv3ViTModel.from_pretrained(tiny_encoders[0]).eval()(batch()[0], output_hidden_states=True)
    expected = reference.hidden_states[model.config.out_indices[2] + 1][:, 5:].transpose(1, 2).reshape(2, 32, 4, 4)
    torch.testing.assert_close(features[2], expected, atol=1e-5, rtol=0)
    assert model.num_parameters(only_trainable=True) == sum(p.numel() for p in model.decode_head.parameters()) + 8 * 32


def test_zero_scale_gives_the_plain_dinov3_features(tiny_encoders):
    model = build_model(tiny_encoders).eval()
    with torch.no_grad():
        model.adapter.scale.zero_()
        pixel_values, _ = batch()
        features = model.encode(pixel_values)[0]
        reference = DINOv3ViTModel.from_pretrained(tiny_encoders[0]).eval()(pixel_values, output_hidden_states=True)
    layer = model.config.out_indices[2]  # stride 16: the native grid, no resampling
    expected = reference.hidden_states[layer + 1][:, 5:].transpose(1, 2).reshape(2, 32, 4, 4)
    torch.testing.assert_close(features[2], expected, atol=1e-5, rtol=0)


def test_save_and_load_round_trip_without_encoder_weights(tiny_encoders, tmp_path):
    model = build_model(tiny_encoders).eval()
    pixel_values, _ = batch()
    model.save_pretrained(tmp_path)
    from safetensors import safe_open

    with safe_open(tmp_path / "model.safetensors", "pt") as saved:
        keys = list(saved.keys())
    assert keys and not any(key.startswith(("visual_encoder.", "depth_encoder.")) for key in keys)
    assert all(key.startswith(("adapter.", "decode_head.")) for key in keys)
    reloaded = SpectralMoEForSemanticSegmentation.from_pretrained(tmp_path).eval()
    assert reloaded.config.label2id == {"impervious": 0, "building": 1, "vegetation": 2}
    auto = AutoModelForSemanticSegmentation.from_pretrained(tmp_path, trust_remote_code=True).eval()
    with torch.no_grad():
        expected = model(pixel_values).logits
        torch.testing.assert_close(reloaded(pixel_values).logits, expected, atol=0, rtol=0)
        torch.testing.assert_close(auto(pixel_values).logits, expected, atol=0, rtol=0)


def test_full_save_holds_encoders_and_loads_without_them(tiny_encoders, tmp_path):
    model = build_model(tiny_encoders).eval()
    model.save_pretrained(tmp_path, save_encoders=True)
    reloaded = SpectralMoEForSemanticSegmentation.from_pretrained(
        tmp_path, backbone="/nonexistent", depth_backbone="/nonexistent"
    ).eval()
    pixel_values, _ = batch()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values).logits, model(pixel_values).logits, atol=0, rtol=0)


def test_incomplete_checkpoint_is_refused(tiny_encoders, tmp_path):
    model = build_model(tiny_encoders)
    state_dict = {k: v for k, v in model.state_dict().items() if k.startswith("decode_head.")}
    model.save_pretrained(tmp_path, state_dict=state_dict)
    with pytest.raises(ValueError, match="adapter"):
        SpectralMoEForSemanticSegmentation.from_pretrained(tmp_path)


def test_corrupted_weights_file_is_a_clear_error(tiny_encoders, tmp_path):
    build_model(tiny_encoders).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        SpectralMoEForSemanticSegmentation.from_pretrained(tmp_path)


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="has no config.json"):
        SpectralMoEForSemanticSegmentation.from_pretrained(tmp_path)


def test_input_errors_say_what_was_expected(tiny_encoders):
    model = build_model(tiny_encoders, **FOUR_BANDS)
    with pytest.raises(ValueError, match=r"\(batch, 4, height, width\) \(NIR, R, G, B\), found \(2, 3, 64, 64\)"):
        model(batch(3)[0])
    with pytest.raises(ValueError, match="multiples of the patch size 16"):
        model(torch.zeros(1, 4, 60, 64))
    pixel_values, labels = batch(4)
    with pytest.raises(ValueError, match=r"labels must have shape .* = \(2, 64, 64\) .* found \(2, 32, 64\)"):
        model(pixel_values, labels=labels[:, :32])
    pixel_values[0, 2, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(pixel_values)


def test_mismatched_encoder_pair_is_refused(tiny_encoders):
    small = DINOv3ViTConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64)
    with pytest.raises(ValueError, match="visual has hidden_size=64, 4 layers; depth has hidden_size=32, 4 layers"):
        tiny_config(None, tiny_encoders[1], backbone_config=small)


@pytest.mark.parametrize("rule", ["cyclic", "mean"])
def test_multiband_patch_kernel_expansion(tiny_encoders, rule):
    model = SpectralMoEForSemanticSegmentation(tiny_config(*tiny_encoders, num_channels=12, patch_embed_expansion=rule,
                                                           depth_rgb_bands=[3, 2, 1]))
    model.load_pretrained_encoders()
    rgb = DINOv3ViTModel.from_pretrained(tiny_encoders[0]).embeddings.patch_embeddings.weight
    expanded = model.visual_encoder.model.embeddings.patch_embeddings.weight
    assert expanded.shape == (32, 12, 16, 16) and not expanded.requires_grad
    if rule == "cyclic":
        for band in range(12):
            assert torch.equal(expanded[:, band], rgb[:, band % 3])
    else:
        torch.testing.assert_close(expanded, rgb.mean(1, keepdim=True).expand(-1, 12, -1, -1) * 3 / 12)
    assert torch.equal(expand_patch_kernel(rgb, 3, "cyclic"), rgb)
    model(*batch(12)).loss.backward()
    assert model.adapter.experts_a.grad is not None and expanded.grad is None


@pytest.mark.parametrize("alignment", ["resample_patch_embed", "resize_input"])
def test_depth_grid_alignment(tiny_encoders, alignment):
    model = build_model(tiny_encoders, depth_grid_alignment=alignment).eval()
    patch = model.depth_encoder.model.embeddings.patch_embeddings
    assert patch.projection.weight.shape[-1] == (16 if alignment == "resample_patch_embed" else 14)
    depth_states = model.depth_encoder(torch.randn(1, 3, 64, 96))
    assert len(depth_states) == 4 and depth_states[0].shape == (1, 1 + 4 * 6, 32)


def test_activation_checkpointing_gives_the_same_gradients(tiny_encoders):
    gradients = []
    for checkpointing in (False, True):
        model = build_model(tiny_encoders, frozen_activation_checkpointing=checkpointing, noisy_gating=False).train()
        torch.manual_seed(0)
        model(*batch()).loss.backward()
        gradients.append(model.adapter.experts_b.grad.clone())
    torch.testing.assert_close(gradients[0], gradients[1])


def test_router_probabilities_of_every_layer(tiny_encoders):
    model = build_model(tiny_encoders, top_k=2).eval()
    outputs = model(batch()[0], output_router_probs=True)
    assert len(outputs.visual_router_probs) == len(outputs.depth_router_probs) == 4
    for gates in outputs.visual_router_probs + outputs.depth_router_probs:
        assert gates.shape == (2, 16, 3)
        torch.testing.assert_close(gates.sum(-1), torch.ones(2, 16))


def test_paper_sizes_on_the_meta_device():
    with torch.device("meta"):
        model = SpectralMoEForSemanticSegmentation(SpectralMoEConfig(id2label={i: str(i) for i in range(24)}))
    adapter = sum(p.numel() for p in model.adapter.parameters())
    head = sum(p.numel() for p in model.decode_head.parameters())
    assert adapter == 5_737_985
    assert 20.5e6 <= head <= 20.7e6
    assert model.num_parameters(only_trainable=True) == adapter + head
