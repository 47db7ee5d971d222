"""EVA02 encoder: key conversion from timm's and EVA's names, RoPE against its closed form, the layer-by-layer
interface, weight reading, and EVA02-L's size. The timm oracle is in test_timm_oracle.py."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel

from modeling_spectralmoe import checkpoint_files
from modeling_spectralmoe.configuration_eva02 import EVA02Config
from modeling_spectralmoe.modeling_eva02 import (
    EVA02Model, apply_rope, convert_eva02_state_dict, read_eva02_weights, resize_position_table, rope_angles,
    rope_frequencies,
)
from modeling_spectralmoe.vpt_adapter import VPTAdapter


# EVA02-L as published (Fang et al., 2023; timm lists eva02_large_patch14_224 at 303.3 M).
EVA02_L_PARAMETERS = 304e6


def tiny_config(**overrides) -> EVA02Config:
    values = dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, patch_size=16,
        image_size=64, pretrain_grid_size=16,
    )
    return EVA02Config(**{**values, **overrides})


@pytest.fixture(scope="module")
def tiny_model() -> EVA02Model:
    torch.manual_seed(0)
    return EVA02Model(tiny_config()).eval()


def random_like(shape, seed) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def released_state_dict(config: EVA02Config, block_names: dict[str, tuple], top_names: dict[str, tuple],
                        extra: dict[str, tuple] = {}) -> dict[str, torch.Tensor]:
    """Random tensors under released names: `*_names` map each released name to its shape."""
    names = dict(top_names)
    for index in range(config.num_hidden_layers):
        names.update({f"blocks.{index}.{name}": shape for name, shape in block_names.items()})
    names.update(extra)
    return {name: random_like(shape, seed) for seed, (name, shape) in enumerate(names.items())}


def shared_names(config: EVA02Config) -> tuple[dict[str, tuple], dict[str, tuple]]:
    dim, patch = config.hidden_size, config.patch_size
    grid = config.image_size // patch
    top = {
        "cls_token": (1, 1, dim), "pos_embed": (1, 1 + grid * grid, dim),
        "patch_embed.proj.weight": (dim, config.num_channels, patch, patch), "patch_embed.proj.bias": (dim,),
    }
    block = {
        "norm1.weight": (dim,), "norm1.bias": (dim,), "norm2.weight": (dim,), "norm2.bias": (dim,),
        "attn.q_proj.weight": (dim, dim), "attn.k_proj.weight": (dim, dim), "attn.v_proj.weight": (dim, dim),
        "attn.proj.weight": (dim, dim), "attn.proj.bias": (dim,),
    }
    return top, block


def eva_original_state_dict(config: EVA02Config) -> dict[str, torch.Tensor]:
    """`eva02_L_pt_m38m_p14to16.pt` names (EVA's `EVA2` with subln, naiveswiglu, rope): q/v biases as separate
    parameters, SwiGLU as w1 (gate), w2, ffn_ln, w3, RoPE tables saved per block, MIM head and mask token."""
    dim, hidden = config.hidden_size, config.intermediate_size
    top, block = shared_names(config)
    block |= {
        "attn.q_bias": (dim,), "attn.v_bias": (dim,),
        "mlp.w1.weight": (hidden, dim), "mlp.w1.bias": (hidden,), "mlp.w2.weight": (hidden, dim),
        "mlp.w2.bias": (hidden,), "mlp.ffn_ln.weight": (hidden,), "mlp.ffn_ln.bias": (hidden,),
        "mlp.w3.weight": (dim, hidden), "mlp.w3.bias": (dim,),
        "attn.rope.freqs_cos": (16, dim // config.num_attention_heads),
    }
    top |= {"norm.weight": (dim,), "norm.bias": (dim,), "mask_token": (1, 1, dim), "lm_head.weight": (8, dim),
            "lm_head.bias": (8,), "rope.freqs_cos": (16, 16), "rope.freqs_sin": (16, 16)}
    return released_state_dict(config, block, top)


def timm_state_dict(config: EVA02Config) -> dict[str, torch.Tensor]:
    """timm `eva02_large_patch14_224` names (`num_classes=0`, average pooling: the final norm is `fc_norm`)."""
    dim, hidden = config.hidden_size, config.intermediate_size
    top, block = shared_names(config)
    block |= {
        "attn.q_proj.bias": (dim,), "attn.v_proj.bias": (dim,),
        "mlp.fc1_g.weight": (hidden, dim), "mlp.fc1_g.bias": (hidden,), "mlp.fc1_x.weight": (hidden, dim),
        "mlp.fc1_x.bias": (hidden,), "mlp.norm.weight": (hidden,), "mlp.norm.bias": (hidden,),
        "mlp.fc2.weight": (dim, hidden), "mlp.fc2.bias": (dim,),
    }
    top |= {"fc_norm.weight": (dim,), "fc_norm.bias": (dim,)}
    return released_state_dict(config, block, top)


def test_eva_original_names_convert_strictly_and_land_in_place():
    config = tiny_config()
    released = eva_original_state_dict(config)
    model = EVA02Model(config).eval()
    model.load_state_dict(convert_eva02_state_dict(released), strict=True)
    attention = model.layers[1].attention
    assert torch.equal(attention.q_proj.bias, released["blocks.1.attn.q_bias"])
    assert torch.equal(attention.v_proj.bias, released["blocks.1.attn.v_bias"])
    assert attention.k_proj.bias is None
    assert torch.equal(model.embeddings.position_embeddings, released["pos_embed"])
    assert torch.equal(model.norm.weight, released["norm.weight"])
    # EVA's SwiGLU: w3(ffn_ln(silu(w1 x) * w2 x)); w1 is the gate.
    tokens = random_like((2, 5, config.hidden_size), seed=99)
    w = {name: released[f"blocks.1.mlp.{name}"] for name in ("w1.weight", "w1.bias", "w2.weight", "w2.bias",
                                                              "ffn_ln.weight", "ffn_ln.bias", "w3.weight", "w3.bias")}
    hidden = F.silu(F.linear(tokens, w["w1.weight"], w["w1.bias"])) * F.linear(tokens, w["w2.weight"], w["w2.bias"])
    hidden = F.layer_norm(hidden, (config.intermediate_size,), w["ffn_ln.weight"], w["ffn_ln.bias"], eps=1e-6)
    expected = F.linear(hidden, w["w3.weight"], w["w3.bias"])
    with torch.no_grad():
        torch.testing.assert_close(model.layers[1].mlp(tokens), expected)


def test_timm_names_convert_strictly_and_land_in_place():
    config = tiny_config()
    released = timm_state_dict(config)
    model = EVA02Model(config)
    model.load_state_dict(convert_eva02_state_dict(released), strict=True)
    assert torch.equal(model.layers[0].attention.q_proj.bias, released["blocks.0.attn.q_proj.bias"])
    assert torch.equal(model.layers[0].mlp.fc1_g.weight, released["blocks.0.mlp.fc1_g.weight"])
    assert torch.equal(model.norm.bias, released["fc_norm.bias"])
    assert model.layers[0].attention.k_proj.bias is None


def test_attention_inner_norm_converts_from_both_namings():
    config = tiny_config(attention_inner_norm=True)
    dim = config.hidden_size
    namings = ((eva_original_state_dict(config), "attn.inner_attn_ln"), (timm_state_dict(config), "attn.norm"))
    for released, name in namings:
        for index in range(config.num_hidden_layers):
            released |= {f"blocks.{index}.{name}.{p}": random_like((dim,), index) for p in ("weight", "bias")}
        model = EVA02Model(config)
        model.load_state_dict(convert_eva02_state_dict(released), strict=True)
        assert torch.equal(model.layers[1].attention.inner_norm.weight, released[f"blocks.1.{name}.weight"])


def test_conversion_refuses_unknown_and_doubled_keys():
    config = tiny_config()
    with pytest.raises(ValueError, match=r"Unknown keys.*blocks\.0\.attn\.qkv\.weight"):
        convert_eva02_state_dict(eva_original_state_dict(config) | {"blocks.0.attn.qkv.weight": torch.zeros(1)})
    released = timm_state_dict(config)
    with pytest.raises(ValueError, match="'norm.weight'"):
        convert_eva02_state_dict(released | {"norm.weight": released["fc_norm.weight"]})
    with pytest.raises(ValueError, match="Not an EVA02 state dict"):
        convert_eva02_state_dict({"encoder.layer.0.weight": torch.zeros(1)})


def test_rope_angles_follow_the_closed_form_with_coordinates_on_the_pretraining_grid():
    config = tiny_config(pretrain_grid_size=16, rope_theta=100.0)
    head_dim = config.hidden_size // config.num_attention_heads
    grid = (3, 5)
    angles = rope_angles(grid, rope_frequencies(config), config.pretrain_grid_size)
    assert angles.shape == (15, head_dim)
    num_frequencies = head_dim // 4
    for row, col in ((0, 0), (2, 4), (1, 3)):
        token = row * grid[1] + col
        for j in range(num_frequencies):
            frequency = 100.0 ** (-j / num_frequencies)
            row_angle, col_angle = row / 3 * 16 * frequency, col / 5 * 16 * frequency
            # Pairs (2j, 2j+1) turn with the row coordinate, pairs in the second half with the column.
            for dim, expected in ((2 * j, row_angle), (2 * j + 1, row_angle), (head_dim // 2 + 2 * j, col_angle)):
                assert math.isclose(angles[token, dim].item(), expected, rel_tol=1e-6, abs_tol=1e-6)


def test_rope_turns_patch_pairs_and_leaves_the_cls_token(tiny_model):
    grid = (2, 3)
    cos, sin = tiny_model.rope(grid, torch.device("cpu"))
    queries = random_like((1, 4, 1 + 6, 16), seed=3)
    rotated = apply_rope(queries, (cos, sin))
    assert torch.equal(rotated[..., 0, :], queries[..., 0, :])
    angles = torch.atan2(sin, cos)
    x, y = queries[..., 1:, 0::2], queries[..., 1:, 1::2]
    a = angles[:, 0::2]
    torch.testing.assert_close(rotated[..., 1:, 0::2], x * a.cos() - y * a.sin())
    torch.testing.assert_close(rotated[..., 1:, 1::2], x * a.sin() + y * a.cos())
    # A rotation keeps each token's norm.
    torch.testing.assert_close(rotated.norm(dim=-1), queries.norm(dim=-1))


def test_rope_with_vpt_prompts_turns_the_patches_as_without_and_leaves_the_prompts(tiny_model):
    """VPT puts its prompts between the cls token and the patches; RoPE rotates the last N tokens, so the patches
    turn exactly as without prompts and the prompts (like the cls token) are not turned."""
    grid, num_prompts, heads = (2, 3), 4, 4
    rope = tiny_model.rope(grid, torch.device("cpu"))
    tokens = random_like((2, 1 + 6, 64), seed=8)
    vpt = VPTAdapter(num_layers=1, hidden_size=64, num_queries=2, query_dim=8, num_prompts=num_prompts)
    prompted = vpt.with_prompts(0, tokens, num_prefix_tokens=1)

    def rotated(sequence):  # as the attention does, per head
        return apply_rope(sequence.unflatten(-1, (heads, -1)).transpose(1, 2), rope).transpose(1, 2).flatten(-2)

    with torch.no_grad():
        plain, with_prompts = rotated(tokens), rotated(prompted)
    torch.testing.assert_close(with_prompts[:, 1 + num_prompts:], plain[:, 1:], rtol=0, atol=0)
    torch.testing.assert_close(with_prompts[:, :1 + num_prompts], prompted[:, :1 + num_prompts], rtol=0, atol=0)
    torch.testing.assert_close(vpt.without_prompts(with_prompts, num_prefix_tokens=1), plain, rtol=0, atol=0)
    assert (plain[:, 1:] - tokens[:, 1:]).abs().max() > 1e-3  # the patches did turn


def test_layer_loop_equals_forward_at_a_non_square_grid(tiny_model):
    pixel_values = random_like((2, 3, 48, 80), seed=5)
    with torch.no_grad():
        tokens, rope = tiny_model.embed(pixel_values)
        assert tokens.shape == (2, 1 + 3 * 5, 64) and rope[0].shape == (15, 16)
        for layer in tiny_model.layers:
            tokens = layer(tokens, rope=rope)
        outputs = tiny_model(pixel_values, output_hidden_states=True)
    assert tiny_model.num_prefix_tokens == 1 and tiny_model.patch_size == 16
    torch.testing.assert_close(outputs.hidden_states[-1], tokens, rtol=0, atol=0)
    torch.testing.assert_close(outputs.last_hidden_state, tiny_model.norm(tokens), rtol=0, atol=0)


def test_position_table_is_used_as_stored_at_its_grid(tiny_model):
    pixel_values = random_like((1, 3, 64, 64), seed=6)
    embeddings = tiny_model.embeddings
    with torch.no_grad():
        tokens, grid = embeddings(pixel_values)
        patches = embeddings.patch_embeddings(pixel_values).flatten(2).transpose(1, 2)
    assert grid == (4, 4)
    torch.testing.assert_close(tokens[:, 1:], patches + embeddings.position_embeddings[:, 1:])
    torch.testing.assert_close(tokens[:, :1], embeddings.cls_token + embeddings.position_embeddings[:, :1])


def test_eva_position_interpolation_reproduces_the_dgss_converted_table():
    """Rein's `convert_eva2_512x512.py` resizes the 16 x 16 table to 32 x 32 once (plain bicubic) and adds it as is;
    `"eva"` gives that table at run time, timm's antialiased resample does not."""
    config = tiny_config(position_interpolation="eva")
    model = EVA02Model(config).eval()
    table = model.embeddings.position_embeddings
    pixel_values = random_like((1, 3, 128, 128), seed=7)  # grid 8 x 8 from a stored 4 x 4
    converted = F.interpolate(table[:, 1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2), size=(8, 8), mode="bicubic",
                              align_corners=False).permute(0, 2, 3, 1).reshape(1, 64, -1)
    with torch.no_grad():
        tokens, _ = model.embeddings(pixel_values)
        patches = model.embeddings.patch_embeddings(pixel_values).flatten(2).transpose(1, 2)
        torch.testing.assert_close(tokens[:, 1:] - patches, converted)
        timm_style = resize_position_table(table, (8, 8), "timm")
    assert (timm_style[:, 1:] - converted).abs().max() > 1e-3
    with pytest.raises(ValueError, match="position_interpolation"):
        EVA02Model(tiny_config(position_interpolation="bilinear"))


def test_eva02_l_on_meta_is_its_published_size():
    with torch.device("meta"):
        model = EVA02Model(EVA02Config())
    count = sum(parameter.numel() for parameter in model.parameters())
    assert count == 303_268_800  # patch 14 at 224 px, with the final norm
    assert abs(count - EVA02_L_PARAMETERS) / EVA02_L_PARAMETERS < 0.01


def test_reads_saved_folders_released_files_and_hub_names(tiny_model, tmp_path, monkeypatch):
    tiny_model.save_pretrained(tmp_path / "saved")
    reloaded = AutoModel.from_pretrained(tmp_path / "saved")
    assert type(reloaded).__name__ == "EVA02Model"
    for key, value in read_eva02_weights(str(tmp_path / "saved")).items():
        assert torch.equal(value, tiny_model.state_dict()[key]), key

    released = eva_original_state_dict(tiny_model.config)
    torch.save({"module": released}, tmp_path / "eva02_pt.pt")  # DeepSpeed's wrapper, as EVA's releases use
    from_file = read_eva02_weights(str(tmp_path / "eva02_pt.pt"))
    assert torch.equal(from_file["layers.0.attention.q_proj.bias"], released["blocks.0.attn.q_bias"])

    calls = []

    def fake_download(repo_id, filename):
        calls.append((repo_id, filename))
        return str(tmp_path / "eva02_pt.pt")

    monkeypatch.setattr(checkpoint_files, "hf_hub_download", fake_download)
    read_eva02_weights("timm/eva02_large_patch14_224.mim_m38m")
    read_eva02_weights("Yuxin-CV/EVA-02/eva02/pt/eva02_L_pt_m38m_p14to16.pt")
    assert calls == [("timm/eva02_large_patch14_224.mim_m38m", "model.safetensors"),
                     ("Yuxin-CV/EVA-02", "eva02/pt/eva02_L_pt_m38m_p14to16.pt")]


def test_refuses_head_widths_rope_cannot_split():
    with pytest.raises(ValueError, match="multiple of 4"):
        EVA02Model(tiny_config(hidden_size=40, num_attention_heads=4))
