"""Router diagnostics logged during training: expert shares, their entropy and collapse warnings."""

import math

import pytest
import torch

from modeling_spectralmoe.trainer.router_diagnostics import router_statistics


def one_hot_gates(choices: list[int], num_experts: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(choices), num_experts).float()[None]  # (1, N, E), k = 1


def test_router_statistics_shares_entropy_and_collapse_warning():
    balanced = one_hot_gates([0, 1, 2, 3] * 4, 4)
    starved = one_hot_gates([0] * 8 + [1] * 4 + [2] * 4, 4)  # expert 3 gets nothing
    threshold = one_hot_gates([0] + [1] * 5 + [2] * 5 + [3] * 5, 4)  # expert 0 at exactly 1/(4E): no warning
    scalars, warnings = router_statistics({"visual": (balanced, starved), "depth": (threshold,)})

    assert [scalars[f"router/visual/layer0/expert{e}"] for e in range(4)] == [0.25] * 4
    assert scalars["router/visual/layer0/entropy"] == pytest.approx(math.log(4))
    assert [scalars[f"router/visual/layer1/expert{e}"] for e in range(4)] == [0.5, 0.25, 0.25, 0.0]
    assert scalars["router/visual/layer1/entropy"] == pytest.approx(-(0.5 * math.log(0.5) + 0.5 * math.log(0.25)))
    assert scalars["router/depth/layer0/expert0"] == pytest.approx(1 / 16)
    assert len(warnings) == 1 and "visual router of layer 1" in warnings[0] and "[3]" in warnings[0]

    below = one_hot_gates([0] + [1] * 11 + [2] * 10 + [3] * 10, 4)  # 1/32 < 1/16
    _, warnings = router_statistics({"visual": (below,), "depth": None})  # fusion="none": no depth gates
    assert len(warnings) == 1 and "experts [0]" in warnings[0]


def test_router_statistics_top2_and_single_expert():
    # k = 2: shares count routed slots; expert 2 is chosen by every token.
    gates = torch.tensor([[[0.6, 0.0, 0.4], [0.0, 0.3, 0.7], [0.5, 0.0, 0.5], [0.0, 0.2, 0.8]]])
    scalars, warnings = router_statistics({"visual": (gates,)})
    assert [scalars[f"router/visual/layer0/expert{e}"] for e in range(3)] == [0.25, 0.25, 0.5]
    assert not warnings
    scalars, warnings = router_statistics({"visual": (one_hot_gates([0] * 6, 1),)})  # "w/o MoE": never collapsing
    assert scalars["router/visual/layer0/entropy"] == 0.0 and not warnings

