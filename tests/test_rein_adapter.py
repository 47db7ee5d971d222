"""ReinAdapter (Rein and DepthForge baselines) against the golden tensors and against the equations written out."""

import math
from types import SimpleNamespace

import pytest
import torch

from modeling_spectralmoe.conversion.rein_adapter import load_official_rein_weights
from modeling_spectralmoe.rein_adapter import ReinAdapter

from .conftest import golden_tensors, random_tokens, run_adapter


GOLDEN_SIZES = dict(num_layers=2, hidden_size=32, num_tokens=10, token_rank=4, query_dim=16)
GOLDEN_FILES = {False: "rein_reference", True: "depthforge_reference"}


def official_params(golden):
    return {k[len("param.") :]: v for k, v in golden.items() if k.startswith("param.")}


@pytest.mark.parametrize("depth_guided", [False, True], ids=["rein", "depthforge"])
def test_reproduces_released_code(depth_guided):
    golden = golden_tensors(GOLDEN_FILES[depth_guided])
    adapter = ReinAdapter(**GOLDEN_SIZES, depth_guided=depth_guided).eval()
    load_official_rein_weights(adapter, official_params(golden))
    torch.testing.assert_close(adapter.query_embeddings(), golden["query_embed"], atol=1e-5, rtol=0)
    for layer in range(2):
        depth = golden[f"layer{layer}.input_depth"] if depth_guided else None
        output, aux_loss = run_adapter(adapter, golden[f"layer{layer}.input_visual"], depth, layer, 1)
        torch.testing.assert_close(output, golden[f"layer{layer}.output_visual"], atol=1e-5, rtol=0)
        assert aux_loss.shape == () and aux_loss == 0


def random_adapter(depth_guided=False, seed=0, **kwargs):
    torch.manual_seed(seed)
    sizes = dict(num_layers=3, hidden_size=16, num_tokens=6, token_rank=3, query_dim=8)
    adapter = ReinAdapter(**{**sizes, **kwargs}, depth_guided=depth_guided)
    with torch.no_grad():  # non-zero token factor B and scale, so that every path carries signal
        adapter.tokens_b.normal_()
        adapter.scale.fill_(0.5)
    return adapter


def direct_form(adapter, visual, depth, layer, prefix):
    """The equations with the token bank formed and passed through token2feat: no low-rank shortcut."""
    bank = adapter.tokens_a[layer] @ adapter.tokens_b[layer]  # (m, D)
    x = visual[:, prefix:]
    scores = x @ bank.t() / math.sqrt(adapter.hidden_size)
    if adapter.depth_guided:
        scores = scores + depth[:, 1:] @ bank.t() / math.sqrt(adapter.hidden_size)
    adjustment = torch.softmax(scores, dim=-1)[..., 1:] @ adapter.token2feat(bank[1:])
    return torch.cat([visual[:, :prefix], x + adapter.scale * adapter.delta_f(adjustment + x)], dim=1)


@pytest.mark.parametrize("depth_guided", [False, True], ids=["rein", "depthforge"])
def test_low_rank_path_equals_direct_form(depth_guided):
    adapter = random_adapter(depth_guided).eval()
    visual, depth = random_tokens()
    with torch.no_grad():
        for layer in range(3):
            output, _ = run_adapter(adapter, visual, depth, layer, 5)
            torch.testing.assert_close(output, direct_form(adapter, visual, depth, layer, 5), atol=1e-5, rtol=1e-5)


def test_query_embedding_interleaves_max_mean_last():
    adapter = random_adapter()
    with torch.no_grad():
        queries = adapter.transform(adapter.tokens_a @ adapter.tokens_b)  # (L, m, Q)
        pooled = [queries.max(0).values, queries.mean(0), queries[-1]]
        interleaved = torch.stack([pooled[c % 3][:, c // 3] for c in range(3 * 8)], dim=-1)
        torch.testing.assert_close(adapter.query_embeddings(), adapter.merge(interleaved))
    assert adapter.query_embeddings().shape == (6, 8)


@pytest.mark.parametrize("depth_guided", [False, True], ids=["rein", "depthforge"])
def test_paper_parameter_count_on_meta_device(depth_guided):
    with torch.device("meta"):
        adapter = ReinAdapter(num_layers=24, hidden_size=1024, num_tokens=100, token_rank=16, query_dim=256,
                              depth_guided=depth_guided)
    assert sum(p.numel() for p in adapter.parameters()) == 2_990_081


@pytest.mark.parametrize("depth_guided", [False, True], ids=["rein", "depthforge"])
def test_gradients_reach_every_parameter(depth_guided):
    adapter = random_adapter(depth_guided).train()
    visual, depth = random_tokens()
    output, aux_loss = run_adapter(adapter, visual, depth, 1, 5)
    (output.square().mean() + aux_loss + adapter.query_embeddings().sum()).backward()
    for name, parameter in adapter.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("depth_guided", [False, True], ids=["rein", "depthforge"])
def test_prefix_tokens_pass_through_and_zero_scale_is_identity(depth_guided):
    adapter = random_adapter(depth_guided).eval()
    visual, depth = random_tokens()
    output, aux_loss, router_probs = run_adapter(adapter, visual, depth, 2, 5, output_router_probs=True)
    assert router_probs is None and aux_loss.shape == () and aux_loss == 0
    assert torch.equal(output[:, :5], visual[:, :5]) and not torch.equal(output[:, 5:], visual[:, 5:])
    with torch.no_grad():
        adapter.scale.zero_()
    assert torch.equal(run_adapter(adapter, visual, depth, 2, 5)[0], visual)


def test_depthforge_uses_depth_and_rein_ignores_it():
    visual, depth = random_tokens()
    rein = random_adapter(depth_guided=False).eval()
    reference = run_adapter(rein, visual, None, 0, 5)[0]
    assert torch.equal(run_adapter(rein, visual, depth, 0, 5)[0], reference)
    assert torch.equal(run_adapter(rein, visual, depth * 2, 0, 5)[0], reference)
    forge = random_adapter(depth_guided=True).eval()
    doubled = run_adapter(forge, visual, depth * 2, 0, 5)[0]
    assert not torch.equal(run_adapter(forge, visual, depth, 0, 5)[0], doubled)
    # Only the depth patch tokens count, paired by position after the depth prefix.
    shifted = torch.cat([depth[:, :1] + 1, depth[:, 1:]], dim=1)
    assert torch.equal(run_adapter(forge, visual, depth, 0, 5)[0], run_adapter(forge, visual, shifted, 0, 5)[0])


def test_depthforge_needs_a_paired_depth_grid():
    adapter = random_adapter(depth_guided=True).eval()
    visual, depth = random_tokens()
    with pytest.raises(ValueError, match="pair one-to-one"):
        run_adapter(adapter, visual, depth[:, :-1], 0, 5)
    with pytest.raises(ValueError, match="depth_hidden_states"):
        run_adapter(adapter, visual, None, 0, 5)


def test_official_loader_names_unknown_and_missing_keys():
    golden = golden_tensors("rein_reference")
    params = official_params(golden)
    adapter = ReinAdapter(**GOLDEN_SIZES)
    with pytest.raises(ValueError, match="mean"):
        load_official_rein_weights(adapter, {**params, "mean": torch.zeros(3)})
    del params["mlp_delta_f.bias"]
    with pytest.raises(ValueError, match="mlp_delta_f.bias"):
        load_official_rein_weights(adapter, params)


def test_official_loader_maps_every_key_and_rejects_wrong_shapes():
    adapter = random_adapter()
    params = {
        "learnable_tokens_a": adapter.tokens_a.detach() + 1, "learnable_tokens_b": adapter.tokens_b.detach() + 1,
        "scale": torch.tensor(0.25),
        **{f"{theirs}.{part}": getattr(getattr(adapter, ours), part).detach() + 1
           for ours, theirs in (("token2feat", "mlp_token2feat"), ("delta_f", "mlp_delta_f"),
                                ("transform", "transform"), ("merge", "merge"))
           for part in ("weight", "bias")},
    }
    fresh = ReinAdapter(num_layers=3, hidden_size=16, num_tokens=6, token_rank=3, query_dim=8)
    load_official_rein_weights(fresh, params)
    assert torch.equal(fresh.tokens_a, params["learnable_tokens_a"]) and fresh.scale == 0.25
    assert torch.equal(fresh.merge.bias, params["merge.bias"])
    wrong = ReinAdapter(num_layers=2, hidden_size=16, num_tokens=6, token_rank=3, query_dim=8)
    with pytest.raises(ValueError, match="learnable_tokens_a"):
        load_official_rein_weights(wrong, params)


@pytest.mark.parametrize("adapter_type", ["rein", "depthforge"])
def test_from_config(adapter_type):
    config = SimpleNamespace(
        backbone_config=SimpleNamespace(num_hidden_layers=3, hidden_size=16), num_adapted_layers=3, num_expert_tokens=6,
        expert_rank=3, decoder_hidden_dim=8, adapter_scale_init=0.01, adapter_type=adapter_type,
    )
    adapter = ReinAdapter.from_config(config)
    assert adapter.tokens_a.shape == (3, 6, 3) and adapter.tokens_b.shape == (3, 3, 16)
    assert adapter.query_embeddings().shape == (6, 8) and adapter.scale.item() == pytest.approx(0.01)
    assert adapter.depth_guided == (adapter_type == "depthforge")
    del config.adapter_type
    assert not ReinAdapter.from_config(config).depth_guided


def test_initialisation():
    adapter = ReinAdapter(num_layers=2, hidden_size=16, num_tokens=50, token_rank=4, query_dim=8)
    assert torch.equal(adapter.tokens_b, torch.zeros_like(adapter.tokens_b))
    assert adapter.scale.item() == pytest.approx(1e-3)
    assert adapter.tokens_a.abs().max() <= 1 / math.sqrt(4) and adapter.tokens_a.std() > 0.2
    visual, depth = random_tokens()
    # B = 0: every token is 0, the scores are uniform and the adjustment is (m-1)/m of token2feat's bias.
    output, _ = run_adapter(adapter, visual, depth, 0, 5)
    x = visual[:, 5:]
    expected = x + 1e-3 * adapter.delta_f(adapter.token2feat.bias * 49 / 50 + x)
    torch.testing.assert_close(output[:, 5:], expected)


def test_reset_parameters_keeps_weights_marked_as_loaded():
    adapter = random_adapter()
    for parameter in adapter.parameters():
        parameter._is_hf_initialized = True  # what transformers sets on weights read from a checkpoint
    before = {name: parameter.detach().clone() for name, parameter in adapter.named_parameters()}
    adapter.reset_parameters()
    for name, parameter in adapter.named_parameters():
        assert torch.equal(parameter, before[name]), name
