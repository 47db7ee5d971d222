"""SET and FADA against their official modules (`golden/set_reference`, `golden/fada_reference`)."""

import pytest
import torch

from modeling_spectralmoe import FADAAdapter, SETAdapter
from modeling_spectralmoe.conversion.rein_adapter import load_official_rein_weights
from modeling_spectralmoe.fada_adapter import HAAR_FILTERS

from .conftest import golden_tensors, run_adapter

GOLDEN_SIZES = dict(num_layers=2, hidden_size=32, num_tokens=10, token_rank=4, query_dim=16)


def golden_adapter(name: str, adapter_class, prefix: str = "param."):
    golden = golden_tensors(name)
    adapter = adapter_class(**GOLDEN_SIZES).eval()
    params = {k[len("param."):]: v for k, v in golden.items() if k.startswith("param.")}
    if prefix != "param.":  # FADA's alternative, trained-looking filters
        params.update({k[len(prefix):]: v for k, v in golden.items() if k.startswith(prefix)})
    load_official_rein_weights(adapter, params)
    return golden, adapter


def test_set_reproduces_the_official_module_stage_by_stage():
    golden, adapter = golden_adapter("set_reference", SETAdapter)
    with torch.no_grad():
        torch.testing.assert_close(adapter.query_embeddings(), golden["query_embed"], atol=1e-5, rtol=0)
        for layer in range(2):
            visual = golden[f"layer{layer}.input_visual"]
            amplitude, phase = adapter.spectrum(visual[:, 1:].transpose(0, 1))
            # Unscaled FFT amplitudes reach tens: their float32 noise is relative.
            torch.testing.assert_close(amplitude.transpose(0, 1), golden[f"layer{layer}.amplitude"], atol=1e-5,
                                       rtol=1e-6)
            torch.testing.assert_close(phase.transpose(0, 1), golden[f"layer{layer}.phase"], atol=1e-5, rtol=0)
            delta_phase, delta_amplitude = adapter.branch_deltas(amplitude, phase, layer)
            torch.testing.assert_close(delta_phase.transpose(0, 1), golden[f"layer{layer}.delta_phase"], atol=1e-5,
                                       rtol=0)
            torch.testing.assert_close(delta_amplitude.transpose(0, 1), golden[f"layer{layer}.delta_amplitude"],
                                       atol=1e-5, rtol=1e-6)
            output, aux_loss = run_adapter(adapter, visual, None, layer, 1)
            torch.testing.assert_close(output, golden[f"layer{layer}.output_visual"], atol=1e-5, rtol=0)
            assert aux_loss == 0
            alone, _ = run_adapter(adapter, visual[:1], None, layer, 1)
            torch.testing.assert_close(alone, golden[f"layer{layer}.output_visual_sample0_alone"], atol=1e-5, rtol=0)
            assert (alone - output[:1]).abs().max() > 1e-4  # SET mixes the images of a batch, as the official code


@pytest.mark.parametrize("filters", ["param.", "alt.param."], ids=["haar", "trained-filters"])
def test_fada_reproduces_the_official_module_stage_by_stage(filters):
    golden, adapter = golden_adapter("fada_reference", FADAAdapter, filters)
    outputs = "layer{}.output_visual" if filters == "param." else "alt.layer{}.output_visual"
    with torch.no_grad():
        torch.testing.assert_close(adapter.query_embeddings(), golden["query_embed"], atol=1e-5, rtol=0)
        for layer in range(2):
            visual = golden[f"layer{layer}.input_visual"]
            if filters == "param.":
                low, high = adapter.wavelet_split(visual[:, 1:].transpose(0, 1).contiguous(), (4, 4))
                torch.testing.assert_close(low.transpose(0, 1), golden[f"layer{layer}.low"], atol=1e-5, rtol=0)
                torch.testing.assert_close(high.transpose(0, 1), golden[f"layer{layer}.high"], atol=1e-5, rtol=0)
                delta_low, delta_high = adapter.branch_deltas(low, high, layer)
                torch.testing.assert_close(delta_low.transpose(0, 1), golden[f"layer{layer}.delta_low"], atol=1e-5,
                                           rtol=0)
                torch.testing.assert_close(delta_high.transpose(0, 1), golden[f"layer{layer}.delta_high"], atol=1e-5,
                                           rtol=0)
            output, _ = run_adapter(adapter, visual, None, layer, 1)
            torch.testing.assert_close(output, golden[outputs.format(layer)], atol=1e-5, rtol=0)


def test_fada_starts_from_haar_filters_and_trains_them():
    adapter = FADAAdapter(**GOLDEN_SIZES)
    assert torch.equal(adapter.wavelet_filters[:, 5, 0], HAAR_FILTERS)
    assert adapter.wavelet_filters.requires_grad and "wavelet_filters" not in adapter.no_weight_decay()
    for grid in [(3, 5), (3, 3), (2, 4)]:
        with pytest.raises(ValueError, match="square grid with an even side"):
            adapter(torch.randn(1, grid[0] * grid[1], 32), 0, grid_size=grid)


@pytest.mark.parametrize("adapter_class, params", [(SETAdapter, 7_546_881), (FADAAdapter, 2_045_441 + 16_384)])
def test_parameter_counts_at_vit_l_match_the_official_modules(adapter_class, params):
    with torch.device("meta"):
        adapter = adapter_class(num_layers=24, hidden_size=1024, num_tokens=100, token_rank=16, query_dim=256)
    assert sum(p.numel() for p in adapter.parameters()) == params
