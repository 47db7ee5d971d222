"""SpectralMoEAdapter against the golden tensors and against the equations of SPEC §2."""

import math

import pytest
import torch

from modeling_spectralmoe import SpectralMoEAdapter
from modeling_spectralmoe.conversion.depthmoe_adapter import load_official_adapter_weights
from modeling_spectralmoe.moe_routing import cv_squared, route, smooth_load

from .conftest import golden_tensors, random_tokens, run_adapter


GOLDEN_SIZES = dict(num_layers=2, hidden_size=32, num_experts=3, expert_rank=4, num_expert_tokens=10, query_dim=16)


def golden_adapter(golden, **kwargs):
    adapter = SpectralMoEAdapter(**GOLDEN_SIZES, **kwargs).eval()
    load_official_adapter_weights(adapter, {k[len("param.") :]: v for k, v in golden.items() if k.startswith("param.")})
    return adapter


def test_reproduces_released_code():
    golden = golden_tensors("depthmoe_reference")
    adapter = golden_adapter(golden, perceptual_map="official_sum_product", fusion="official_diagonal")
    torch.testing.assert_close(adapter.query_embeddings(), golden["query_embed"], atol=1e-5, rtol=0)
    for layer in range(2):
        output, aux_loss, (visual_gates, depth_gates) = run_adapter(
            adapter, golden[f"layer{layer}.input_visual"], golden[f"layer{layer}.input_depth"], layer, 5, 1,
            output_router_probs=True,
        )
        torch.testing.assert_close(output, golden[f"layer{layer}.output_visual"], atol=1e-5, rtol=0)
        torch.testing.assert_close(aux_loss.reshape(1), golden[f"layer{layer}.aux_loss"], rtol=1e-6, atol=0)
        assert torch.equal(visual_gates.flatten(0, 1).argmax(-1), golden[f"layer{layer}.visual_expert"].long())
        assert torch.equal(depth_gates.flatten(0, 1).argmax(-1), golden[f"layer{layer}.depth_expert"].long())


@pytest.mark.parametrize("fusion", ["cross_attention", "add", "none"])
@pytest.mark.parametrize("top_k", [1, 2])
def test_reproduces_paper_form(fusion, top_k):
    golden = golden_tensors("spectralmoe_paper_reference")
    adapter = golden_adapter(golden, fusion=fusion, top_k=top_k)
    torch.testing.assert_close(adapter.query_embeddings(), golden["query_embed"], atol=1e-5, rtol=0)
    for layer in range(2):
        output, aux_loss = run_adapter(
            adapter, golden[f"layer{layer}.input_visual"], golden[f"layer{layer}.input_depth"], layer, 5
        )
        expected = f"layer{layer}.{fusion}.top{top_k}"
        torch.testing.assert_close(output, golden[f"{expected}.output_visual"], atol=1e-5, rtol=0)
        torch.testing.assert_close(aux_loss.reshape(1), golden[f"{expected}.aux_loss"], rtol=1e-6, atol=0)


def random_adapter(seed=0, **kwargs):
    torch.manual_seed(seed)
    sizes = dict(num_layers=2, hidden_size=16, num_experts=4, expert_rank=3, num_expert_tokens=6, query_dim=8)
    adapter = SpectralMoEAdapter(**{**sizes, **kwargs})
    with torch.no_grad():  # non-zero weights so that every path carries signal
        for parameter in (adapter.experts_b, adapter.gate_prototypes, adapter.noise_weights):
            parameter.normal_()
        adapter.scale.fill_(0.5)
    return adapter


@pytest.mark.parametrize("top_k", [1, 2, 3])
@pytest.mark.parametrize("training", [False, True])
def test_gates_sum_to_one_over_exactly_k_experts(top_k, training):
    adapter = random_adapter(top_k=top_k).train(training)
    visual, depth = random_tokens()
    _, _, (visual_gates, depth_gates) = run_adapter(adapter, visual, depth, 0, 5, output_router_probs=True)
    for gates in (visual_gates, depth_gates):
        assert gates.shape == (2, 9, 4)
        torch.testing.assert_close(gates.sum(-1), torch.ones(2, 9))
        assert torch.equal((gates > 0).sum(-1), torch.full((2, 9), top_k))


def test_noise_only_in_training_mode():
    adapter = random_adapter()
    visual, depth = random_tokens()
    adapter.eval()
    first = run_adapter(adapter, visual, depth, 0, 5, output_router_probs=True)
    second = run_adapter(adapter, visual, depth, 0, 5, output_router_probs=True)
    assert torch.equal(first[0], second[0]) and torch.equal(first[2][0], second[2][0])
    adapter.train()
    torch.manual_seed(0)
    noisy = [run_adapter(adapter, visual, depth, 0, 5, output_router_probs=True)[2][0] for _ in range(3)]
    assert any(not torch.equal(gates, first[2][0]) for gates in noisy)


def test_eval_gates_pick_nearest_prototype_under_laplace_gating():
    adapter = random_adapter().eval()
    visual, depth = random_tokens()
    _, _, (visual_gates, _) = run_adapter(adapter, visual, depth, 1, 5, output_router_probs=True)
    distances = torch.cdist(visual[:, 5:].reshape(-1, 16), adapter.gate_prototypes[1, 0].t())
    assert torch.equal(visual_gates.reshape(-1, 4).argmax(-1), distances.argmin(-1))


def test_smooth_load_matches_hand_computation():
    clean = torch.tensor([[0.0, 1.0, -1.0], [0.5, 0.2, 0.1]])
    noisy = torch.tensor([[0.3, 0.9, -1.2], [0.1, 0.6, 0.0]])
    noise_std = torch.tensor([[1.0, 0.5, 2.0], [0.4, 0.8, 1.0]])
    top_logits = noisy.topk(2, dim=1).values  # k + 1 = 2 largest
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    # Token 0: expert 1 is in (0.9 > 0.3): compare with the 2nd largest (0.3); experts 0, 2 are out: with the 1st (0.9).
    # Token 1: expert 1 is in (0.6 > 0.1): compare with 0.1; experts 0, 2 out: with 0.6.
    expected = torch.tensor([
        phi((0.0 - 0.9) / 1.0) + phi((0.5 - 0.6) / 0.4),
        phi((1.0 - 0.3) / 0.5) + phi((0.2 - 0.1) / 0.8),
        phi((-1.0 - 0.9) / 2.0) + phi((0.1 - 0.6) / 1.0),
    ])
    torch.testing.assert_close(smooth_load(clean, noisy, noise_std, top_logits, k=1), expected)


def test_load_is_smooth_and_differentiable_in_training():
    torch.manual_seed(0)
    tokens = torch.randn(20, 8)
    prototypes = torch.randn(8, 4, requires_grad=True)
    noise = torch.randn(8, 4, requires_grad=True)
    routing = route(tokens, prototypes, noise, top_k=1, gating="laplace", add_noise=True)
    assert not torch.equal(routing.load, routing.load.round())  # probabilities, not counts
    cv_squared(routing.load).backward()
    assert prototypes.grad.abs().sum() > 0 and noise.grad.abs().sum() > 0


def test_cv_squared_closed_form_and_single_expert():
    values = torch.tensor([1.0, 2.0, 3.0, 6.0])
    torch.testing.assert_close(cv_squared(values), values.var() / (values.mean() ** 2 + 1e-10))
    assert cv_squared(torch.tensor([7.0])) == 0
    adapter = random_adapter(num_experts=1).train()
    visual, depth = random_tokens()
    assert run_adapter(adapter, visual, depth, 0, 5)[1] == 0


@pytest.mark.parametrize("gating", ["laplace", "softmax", "gaussian"])
def test_gating_logits(gating):
    adapter = random_adapter(gating=gating).eval()
    visual, depth = random_tokens()
    _, _, (visual_gates, _) = run_adapter(adapter, visual, depth, 0, 5, output_router_probs=True)
    tokens, prototypes = visual[:, 5:].reshape(-1, 16), adapter.gate_prototypes[0, 0]
    logits = {
        "laplace": -torch.cdist(tokens, prototypes.t()),
        "softmax": tokens @ prototypes,
        "gaussian": -torch.cdist(tokens, prototypes.t()) ** 2,
    }[gating]
    assert torch.equal(visual_gates.reshape(-1, 4).argmax(-1), logits.argmax(-1))


def test_shared_gate_routes_both_modalities_with_one_router():
    adapter = random_adapter(shared_gate=True).eval()
    assert adapter.gate_prototypes.shape == (2, 1, 16, 4)
    visual, _ = random_tokens()
    depth = torch.cat([visual[:, :1], visual[:, 5:]], dim=1)  # the same patch tokens in the depth layout
    _, _, (visual_gates, depth_gates) = run_adapter(adapter, visual, depth, 0, 5, output_router_probs=True)
    assert torch.equal(visual_gates, depth_gates)
    dual = random_adapter(shared_gate=False).eval()
    _, _, (visual_gates, depth_gates) = run_adapter(dual, visual, depth, 0, 5, output_router_probs=True)
    assert not torch.equal(visual_gates, depth_gates)


def test_prefix_tokens_pass_through_and_zero_scale_is_identity():
    adapter = random_adapter().eval()
    visual, depth = random_tokens()
    output, _ = run_adapter(adapter, visual, depth, 0, 5)
    assert torch.equal(output[:, :5], visual[:, :5]) and not torch.equal(output[:, 5:], visual[:, 5:])
    with torch.no_grad():
        adapter.scale.zero_()
    assert torch.equal(run_adapter(adapter, visual, depth, 0, 5)[0], visual)


def test_fusion_none_ignores_depth_and_add_uses_it():
    visual, depth = random_tokens()
    no_depth = random_adapter(fusion="none").eval()
    output, _, (_, depth_gates) = run_adapter(no_depth, visual, None, 0, 5, output_router_probs=True)
    assert depth_gates is None and output.shape == visual.shape
    add = random_adapter(fusion="add").eval()
    assert not torch.equal(run_adapter(add, visual, depth, 0, 5)[0], run_adapter(add, visual, 2 * depth, 0, 5)[0])


def test_mismatched_depth_grid_is_a_clear_error():
    adapter = random_adapter().eval()
    visual, depth = random_tokens()
    with pytest.raises(ValueError, match="pair one-to-one"):
        run_adapter(adapter, visual, depth[:, :-1], 0, 5)


def test_gradients_reach_every_adapter_parameter_in_training():
    adapter = random_adapter(top_k=2).train()
    visual, depth = random_tokens()
    output, aux_loss = run_adapter(adapter, visual, depth, 1, 5)
    (output.square().mean() + aux_loss + adapter.query_embeddings().sum()).backward()
    for name, parameter in adapter.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_paper_parameter_count_on_meta_device():
    with torch.device("meta"):
        adapter = SpectralMoEAdapter(num_layers=24, hidden_size=1024, num_experts=6, expert_rank=16,
                                     num_expert_tokens=100, query_dim=256)
    assert sum(p.numel() for p in adapter.parameters()) == 5_737_985


def test_official_loader_rejects_unknown_and_missing_keys():
    golden = golden_tensors("depthmoe_reference")
    params = {k[len("param.") :]: v for k, v in golden.items() if k.startswith("param.")}
    adapter = SpectralMoEAdapter(**GOLDEN_SIZES)
    with pytest.raises(ValueError, match="mean"):
        load_official_adapter_weights(adapter, {**params, "mean": torch.zeros(3)})
    del params["experts_b.1.2"]
    with pytest.raises(ValueError, match="experts_b.1.2"):
        load_official_adapter_weights(adapter, params)


def test_euclidean_distance_gradient_matches_autograd_of_the_definition():
    from modeling_spectralmoe.moe_routing import EuclideanDistance

    torch.manual_seed(0)
    tokens = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    prototypes = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(EuclideanDistance.apply, (tokens, prototypes))
    reference = (tokens[:, :, None] - prototypes[None]).norm(dim=1)
    torch.testing.assert_close(EuclideanDistance.apply(tokens, prototypes), reference)
