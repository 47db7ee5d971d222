"""DOFA encoder: the authors' numerics, wavelength handling, grid sizes, checkpoint conversion and loading."""

import pytest
import torch
from transformers import AutoModel

from modeling_spectralmoe import checkpoint_files, modeling_dofa
from modeling_spectralmoe.configuration_dofa import DOFAConfig
from modeling_spectralmoe.modeling_dofa import DOFAModel, convert_official_dofa_state_dict, load_dofa_weights

from .conftest import golden_tensors


# Central wavelengths (micrometres) of real sensors, in each sensor's band order.
SENSOR_WAVELENGTHS = {
    "sentinel2_13": [0.443, 0.49, 0.56, 0.665, 0.705, 0.74, 0.783, 0.842, 0.865, 0.945, 1.375, 1.61, 2.19],
    "sentinel2_12": [0.443, 0.49, 0.56, 0.665, 0.705, 0.74, 0.783, 0.842, 0.865, 0.945, 1.61, 2.19],
    "gf2_nrgb": [0.83, 0.665, 0.56, 0.49],
    "flair_rgbn": [0.665, 0.56, 0.49, 0.83],
    "naip_rgbn": [0.635, 0.555, 0.465, 0.835],
    "landsat8_oli": [0.443, 0.482, 0.561, 0.655, 0.865, 1.609, 2.201],
    "whu_ohs_32": torch.linspace(0.466, 0.940, 32).tolist(),
}


def tiny_config(**overrides) -> DOFAConfig:
    values = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=8,
        image_size=32,
        wavelength_embed_dim=32,
        num_weight_tokens=16,
        weight_generator_ffn_dim=64,
        weight_generator_num_heads=4,
    )
    return DOFAConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def tiny_model() -> DOFAModel:
    torch.manual_seed(0)
    return DOFAModel(tiny_config()).eval()


@pytest.fixture(scope="module")
def golden():
    tensors = golden_tensors("dofa_reference")
    params = {key.removeprefix("param."): value for key, value in tensors.items() if key.startswith("param.")}
    return tensors, params


def golden_config(params: dict[str, torch.Tensor]) -> DOFAConfig:
    # Sizes from the archive's metadata (img 64, patch 16, hidden 32, depth 2, heads 2, wv_planes 128, eps 1e-6,
    # padding 1); the MLP width is only in the weights.
    return DOFAConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=params["blocks.0.mlp.fc1.weight"].shape[0],
        patch_size=16,
        image_size=64,
        layer_norm_eps=1e-6,
        wavelength_embed_dim=128,
        patch_embed_padding=1,
    )


def test_reproduces_authors_outputs(golden):
    tensors, params = golden
    model = DOFAModel(golden_config(params)).eval()
    model.load_state_dict(convert_official_dofa_state_dict(params), strict=True)
    pixel_values, wavelengths = tensors["input.pixel_values"], tensors["input.wavelengths_um"]
    with torch.no_grad():
        patches, grid = model.embeddings.patch_embeddings(pixel_values, wavelengths)
        outputs = model(pixel_values, wavelengths, output_hidden_states=True)
    # padding=1 with stride 16 on 64x64 still gives a 4x4 grid: N = 16.
    assert grid == (4, 4)
    torch.testing.assert_close(patches, tensors["output.patch_embed"], atol=1e-5, rtol=0)
    torch.testing.assert_close(outputs.hidden_states[0], tensors["output.embeddings"], atol=1e-5, rtol=0)
    for index in range(2):
        expected = tensors[f"output.block{index}"]
        torch.testing.assert_close(outputs.hidden_states[index + 1], expected, atol=1e-5, rtol=0)
    assert len(outputs.hidden_states) == 3
    assert outputs.last_hidden_state is outputs.hidden_states[-1]


def test_loads_official_pth_file(golden, tmp_path):
    tensors, params = golden
    path = tmp_path / "dofa.pth"
    torch.save({**params, "norm.weight": torch.ones(32), "norm.bias": torch.zeros(32)}, path)
    model = DOFAModel(golden_config(params)).eval()
    load_dofa_weights(model, str(path))
    with torch.no_grad():
        output = model(tensors["input.pixel_values"], tensors["input.wavelengths_um"]).last_hidden_state
    torch.testing.assert_close(output, tensors["output.block1"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("sensor", sorted(SENSOR_WAVELENGTHS))
def test_band_order_follows_wavelengths(tiny_model, sensor):
    wavelengths = torch.tensor(SENSOR_WAVELENGTHS[sensor])
    num_bands = len(wavelengths)
    pixel_values = torch.randn(2, num_bands, 32, 32, generator=torch.Generator().manual_seed(num_bands))
    order = torch.randperm(num_bands, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tokens = tiny_model(pixel_values, wavelengths).last_hidden_state
        permuted_together = tiny_model(pixel_values[:, order], wavelengths[order]).last_hidden_state
        permuted_bands_only = tiny_model(pixel_values[:, order], wavelengths).last_hidden_state
    assert tokens.shape == (2, tiny_model.num_prefix_tokens + 16, 32)
    torch.testing.assert_close(permuted_together, tokens, atol=1e-5, rtol=0)
    assert (permuted_bands_only - tokens).abs().max() > 1e-3


def test_wavelength_list_tuple_and_tensor_agree(tiny_model):
    wavelengths = SENSOR_WAVELENGTHS["gf2_nrgb"]
    pixel_values = torch.randn(1, 4, 32, 32)
    with torch.no_grad():
        outputs = [tiny_model(pixel_values, w).last_hidden_state for w in (wavelengths, tuple(wavelengths))]
        outputs.append(tiny_model(pixel_values, torch.tensor(wavelengths, dtype=torch.float64)).last_hidden_state)
    for output in outputs[1:]:
        torch.testing.assert_close(output, outputs[0], atol=0, rtol=0)


@pytest.mark.parametrize(
    ("wavelengths", "message"),
    [
        ([0.49, 0.56, 0.665, 0.83, 1.61], "got 5 wavelengths for 4 bands"),
        ([0.49, 0.56, 0.665], "got 3 wavelengths for 4 bands"),
        ([0.49, 0.0, 0.665, 0.83], "positive"),
        ([0.49, -0.56, 0.665, 0.83], "positive"),
        ([490.0, 560.0, 665.0, 830.0], "nanometres"),
        ([[0.49, 0.56], [0.665, 0.83]], "flat list"),
    ],
)
def test_rejects_bad_wavelengths(tiny_model, wavelengths, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(torch.randn(1, 4, 32, 32), wavelengths)


@pytest.mark.parametrize(
    ("image_size", "grid"),
    [((32, 32), (4, 4)), ((40, 64), (5, 8)), ((64, 24), (8, 3)), ((36, 52), (4, 6))],
)
def test_grid_sizes_and_position_interpolation(tiny_model, image_size, grid):
    pixel_values = torch.randn(1, 3, *image_size)
    with torch.no_grad():
        outputs = tiny_model(pixel_values, [0.665, 0.56, 0.49], output_hidden_states=True)
    assert outputs.last_hidden_state.shape == (1, 1 + grid[0] * grid[1], 32)
    assert len(outputs.hidden_states) == 3
    positions = tiny_model.embeddings.resized_position_embeddings(grid)
    assert positions.shape == (1, 1 + grid[0] * grid[1], 32)
    torch.testing.assert_close(positions[:, 0], tiny_model.embeddings.position_embeddings[:, 0])


def test_builds_on_meta_device():
    with torch.device("meta"):
        model = DOFAModel(tiny_config())
    assert model.embeddings.position_embeddings.shape == (1, 17, 32)


def test_trained_grid_uses_stored_position_embedding(tiny_model):
    stored = tiny_model.embeddings.position_embeddings
    assert tiny_model.embeddings.resized_position_embeddings((4, 4)) is stored
    # Interpolating to the same grid changes nothing, so other grids are a smooth resize of the trained one.
    side = tiny_model.embeddings.trained_grid_size
    patches = stored[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    same = torch.nn.functional.interpolate(patches, size=(side, side), mode="bicubic", align_corners=False)
    torch.testing.assert_close(same, patches)


def test_save_and_load_round_trip(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    pixel_values = torch.randn(2, 4, 32, 32)
    wavelengths = SENSOR_WAVELENGTHS["naip_rgbn"]
    reloaded = DOFAModel.from_pretrained(tmp_path).eval()
    auto = AutoModel.from_pretrained(tmp_path).eval()
    fresh = DOFAModel(tiny_config()).eval()
    load_dofa_weights(fresh, str(tmp_path))
    assert isinstance(auto, DOFAModel)
    with torch.no_grad():
        expected = tiny_model(pixel_values, wavelengths).last_hidden_state
        for model in (reloaded, auto, fresh):
            torch.testing.assert_close(model(pixel_values, wavelengths).last_hidden_state, expected, atol=0, rtol=0)


def test_tuple_output(tiny_model):
    with torch.no_grad():
        outputs = tiny_model(torch.randn(1, 4, 32, 32), SENSOR_WAVELENGTHS["gf2_nrgb"], True, return_dict=False)
    assert len(outputs) == 2 and len(outputs[1]) == 3
    assert outputs[0] is outputs[1][-1]


def official_state_dict(model: DOFAModel) -> dict[str, torch.Tensor]:
    """`model`'s weights under the official names (inverse of the converter, built from its key map)."""
    ours = model.state_dict()
    key_map = modeling_dofa._official_key_map(model.config.num_hidden_layers)
    return {official: ours[name] for official, name in key_map.items()}


def test_converter_drops_pretraining_head_and_rejects_unknown_or_missing_keys(tiny_model):
    official = official_state_dict(tiny_model)
    head = {"norm.weight": torch.ones(32), "fc_norm.bias": torch.zeros(32), "head.weight": torch.zeros(10, 32)}
    converted = convert_official_dofa_state_dict({**official, **head})
    assert set(converted) == set(tiny_model.state_dict())

    with pytest.raises(ValueError, match=r"decoder_embed\.weight"):
        convert_official_dofa_state_dict({**official, "decoder_embed.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"blocks\.1\.attn\.qkv\.bias"):
        convert_official_dofa_state_dict({k: v for k, v in official.items() if k != "blocks.1.attn.qkv.bias"})
    with pytest.raises(ValueError, match="pos_embed"):
        convert_official_dofa_state_dict({k: v for k, v in official.items() if k != "pos_embed"})


def _leave_mark(path):
    with open(path, "w") as handle:
        handle.write("code ran")


class _CodeRunningPickle:
    def __init__(self, mark_path):
        self.mark_path = mark_path

    def __reduce__(self):
        return _leave_mark, (self.mark_path,)


def test_loader_refuses_pickles_that_run_code(tiny_model, tmp_path):
    mark = tmp_path / "mark.txt"
    path = tmp_path / "evil.pth"
    torch.save({"cls_token": _CodeRunningPickle(str(mark))}, path)
    with pytest.raises(ValueError, match="arbitrary code"):
        load_dofa_weights(tiny_model, str(path))
    assert not mark.exists()


def test_hub_file_names_split_into_repo_and_filename(tiny_model, tmp_path, monkeypatch):
    path = tmp_path / "weights.pth"
    torch.save(official_state_dict(tiny_model), path)
    calls = []

    def fake_download(repo_id, filename):
        calls.append((repo_id, filename))
        return str(path)

    monkeypatch.setattr(checkpoint_files, "hf_hub_download", fake_download)
    load_dofa_weights(DOFAModel(tiny_config()), "earthflow/DOFA/DOFA_ViT_large_e100.pth")
    assert calls == [("earthflow/DOFA", "DOFA_ViT_large_e100.pth")]
    with pytest.raises(ValueError, match="owner/repo/filename"):
        load_dofa_weights(tiny_model, "not-a-local-path")


def test_frozen_eval_encoder_caches_kernels_per_wavelength_set(tiny_model):
    embeddings = tiny_model.embeddings.patch_embeddings
    calls = []
    handle = embeddings.weight_generator.register_forward_hook(lambda *args: calls.append(1))
    pixel_values = torch.randn(1, 4, 32, 32)
    gf2, flair = SENSOR_WAVELENGTHS["gf2_nrgb"], SENSOR_WAVELENGTHS["flair_rgbn"]
    try:
        tiny_model.requires_grad_(False)
        first = tiny_model(pixel_values, gf2).last_hidden_state
        torch.testing.assert_close(tiny_model(pixel_values, gf2).last_hidden_state, first, rtol=0, atol=0)
        assert len(calls) == 1  # generated once for the set
        tiny_model(pixel_values, flair)
        assert len(calls) == 2  # another sensor regenerates
        bias = embeddings.weight_generator.bias_head.bias
        original = bias.detach().clone()
        with torch.no_grad():
            bias.add_(1.0)  # edited weights invalidate the cache
        changed = tiny_model(pixel_values, gf2).last_hidden_state
        assert len(calls) == 3 and not torch.equal(changed, first)
        with torch.no_grad():
            bias.copy_(original)
        tiny_model.requires_grad_(True)  # trainable generator: never cached
        tiny_model(pixel_values, gf2)
        tiny_model(pixel_values, gf2)
        assert len(calls) == 5
    finally:
        handle.remove()
        tiny_model.requires_grad_(True)
