"""Spectral inputs end to end: DOFA as the visual encoder, band metadata validation, the pipeline on a real image."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from modeling_spectralmoe import (
    DOFAConfig, DOFAModel, SpectralMoEConfig, SpectralMoEForSemanticSegmentation, SpectralMoEImageProcessor,
)

from modeling_spectralmoe.configuration_spectralmoe import rgb_band_indices

from .conftest import TINY_LABELS, randomize_adapter, real_data_dir, tiny_config


GF2_WAVELENGTHS = [0.83, 0.665, 0.56, 0.49]
WHU_OHS_WAVELENGTHS = np.linspace(0.466, 0.940, 32).round(4).tolist()


@pytest.fixture(scope="module")
def tiny_dofa(tmp_path_factory) -> str:
    """A 4-layer, width-32 DOFA with random weights saved like a checkpoint (pairs with the tiny depth model)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("dofa")
    config = DOFAConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                        image_size=64, patch_size=16)
    DOFAModel(config).save_pretrained(path)
    return str(path)


@pytest.mark.parametrize(
    "wavelengths, rgb",
    [(GF2_WAVELENGTHS, [1, 2, 3]), (WHU_OHS_WAVELENGTHS, [14, 6, 1])],
    ids=["gf2-4-bands", "whu-ohs-32-bands"],
)
def test_dofa_backbone_forward_backward(tiny_dofa, tiny_encoders, wavelengths, rgb):
    config = tiny_config(tiny_dofa, tiny_encoders[1], num_channels=len(wavelengths), wavelengths=wavelengths,
                         depth_rgb_bands=rgb)
    assert isinstance(config.backbone_config, DOFAConfig)
    model = SpectralMoEForSemanticSegmentation(config)
    model.load_pretrained_encoders()
    randomize_adapter(model)
    pixel_values = torch.randn(2, len(wavelengths), 64, 64)
    labels = torch.randint(0, 3, (2, 64, 64))
    outputs = model(pixel_values=pixel_values, labels=labels, output_logits=True)
    assert outputs.logits.shape == (2, 3, 64, 64)
    outputs.loss.backward()
    assert model.adapter.experts_b.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.visual_encoder.parameters())
    reference = DOFAModel.from_pretrained(tiny_dofa).embeddings.patch_embeddings
    loaded = model.visual_encoder.model.embeddings.patch_embeddings
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), loaded.state_dict().values()))


def test_dofa_needs_one_wavelength_per_band(tiny_dofa, tiny_encoders):
    with pytest.raises(ValueError, match="needs `wavelengths`"):
        tiny_config(tiny_dofa, tiny_encoders[1], num_channels=4, depth_rgb_bands=[1, 2, 3])
    with pytest.raises(ValueError, match="`wavelengths` has 3 entries but `num_channels` is 4"):
        tiny_config(tiny_dofa, tiny_encoders[1], num_channels=4, wavelengths=GF2_WAVELENGTHS[:3],
                    depth_rgb_bands=[1, 2, 3])


def test_band_count_follows_the_band_metadata(tiny_encoders):
    config = tiny_config(*tiny_encoders, num_channels=None, band_names=["NIR", "R", "G", "B"],
                         depth_rgb_bands=[1, 2, 3])
    assert config.num_channels == 4
    assert tiny_config(*tiny_encoders, num_channels=None).num_channels == 3


def test_wavelengths_in_nanometres_are_refused(tiny_dofa, tiny_encoders):
    with pytest.raises(ValueError, match="micrometres .* divided by 1000"):
        tiny_config(tiny_dofa, tiny_encoders[1], num_channels=4, wavelengths=[830, 665, 560, 490],
                    depth_rgb_bands=[1, 2, 3])


def test_band_metadata_errors_say_expected_and_found(tiny_encoders):
    with pytest.raises(ValueError, match=r"indices must be in \[0, 3\] for 4 bands, found \[4\]"):
        tiny_config(*tiny_encoders, num_channels=4, depth_rgb_bands=[1, 2, 4])
    with pytest.raises(ValueError, match="`band_names` has 3 entries but `num_channels` is 4"):
        tiny_config(*tiny_encoders, num_channels=4, band_names=["R", "G", "B"])
    with pytest.raises(ValueError, match="must name 3 bands"):
        tiny_config(*tiny_encoders, depth_rgb_bands=[0, 1])
    with pytest.raises(ValueError, match="`fusion` must be one of"):
        SpectralMoEConfig(fusion="concat")


def test_unknown_checkpoint_names_its_remedy():
    with pytest.raises(ValueError, match="Pass its architecture as `backbone_config`"):
        SpectralMoEConfig(backbone="someone/unknown-vit")


def test_pipeline_segments_a_real_potsdam_tile(tiny_encoders, tmp_path):
    image_path = next(real_data_dir("isprs", "potsdam", "images").glob("*.png"))
    image = Image.open(image_path).convert("RGB").resize((96, 80))  # small and non-square: keeps the test fast
    model = SpectralMoEForSemanticSegmentation(tiny_config(*tiny_encoders))
    model.load_pretrained_encoders()
    randomize_adapter(model)
    model.save_pretrained(tmp_path)
    SpectralMoEImageProcessor().save_pretrained(tmp_path)  # ImageNet statistics in 8-bit units
    segmenter = pipeline("image-segmentation", model=str(tmp_path), trust_remote_code=True)
    annotations = segmenter(image)
    assert annotations and {a["label"] for a in annotations} <= set(TINY_LABELS.values())
    coverage = np.zeros((80, 96), dtype=int)
    for annotation in annotations:
        assert isinstance(annotation["mask"], Image.Image) and annotation["mask"].size == (96, 80)
        coverage += np.asarray(annotation["mask"]) > 0
    assert (coverage == 1).all()  # every pixel belongs to exactly one class mask


@pytest.mark.parametrize(
    "band_names, wavelengths, expected",
    [
        (["NIR", "R", "G", "B"], None, [1, 2, 3]),
        (["blue", "Green", "RED", "nir"], None, [2, 1, 0]),
        (None, GF2_WAVELENGTHS, [1, 2, 3]),
        (None, WHU_OHS_WAVELENGTHS, [13, 6, 2]),  # nearest 665, 560, 490 nm, not the three bluest
        (["B1", "B2", "B3", "B4"], [0.83, 0.94, 1.61, 2.19], None),  # no visible band within 50 nm
    ],
    ids=["names", "names-any-case", "gf2-wavelengths", "whu-ohs-wavelengths", "no-visible-band"],
)
def test_rgb_bands_come_from_names_or_wavelengths(band_names, wavelengths, expected):
    assert rgb_band_indices(band_names, wavelengths) == expected


def test_bad_input_07_hyperspectral_without_rgb_names_feeds_visible_bands_to_depth(tiny_dofa, tiny_encoders):
    config = tiny_config(tiny_dofa, tiny_encoders[1], num_channels=32, wavelengths=WHU_OHS_WAVELENGTHS)
    assert config.depth_rgb_bands == [13, 6, 2]
    with pytest.raises(ValueError, match="Set `depth_rgb_bands`"):
        tiny_config(*tiny_encoders, num_channels=5, band_names=["C1", "C2", "C3", "C4", "C5"])


def test_per_call_wavelengths_serve_another_sensor(tiny_dofa, tiny_encoders):
    """A model trained on 4 GF-2 bands runs on a 12-band Sentinel-2 tile given its own wavelengths."""
    model = SpectralMoEForSemanticSegmentation(
        tiny_config(tiny_dofa, tiny_encoders[1], num_channels=4, wavelengths=GF2_WAVELENGTHS)
    )
    model.load_pretrained_encoders()
    randomize_adapter(model)
    model.eval()
    sentinel2 = [0.443, 0.49, 0.56, 0.665, 0.705, 0.74, 0.783, 0.842, 0.865, 0.945, 1.61, 2.19]
    tile = torch.randn(1, 12, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(pixel_values=tile, wavelengths=sentinel2).logits
        permutation = torch.randperm(12, generator=torch.Generator().manual_seed(1))
        permuted_wavelengths = [sentinel2[i] for i in permutation]
        both_permuted = model(pixel_values=tile[:, permutation], wavelengths=permuted_wavelengths).logits
        only_wavelengths = model(pixel_values=tile, wavelengths=permuted_wavelengths).logits
    assert logits.shape == (1, 3, 64, 64)
    torch.testing.assert_close(both_permuted, logits, atol=1e-4, rtol=0)  # bands travel with their wavelengths
    assert (only_wavelengths - logits).abs().max() > 1e-4
    with pytest.raises(ValueError, match=r"shape \(batch, 12, height, width\)"):
        model(pixel_values=tile[:, :4], wavelengths=sentinel2)


def test_per_call_wavelengths_need_a_wavelength_conditioned_encoder(tiny_encoders):
    model = SpectralMoEForSemanticSegmentation(tiny_config(*tiny_encoders))
    with pytest.raises(ValueError, match="wavelength-conditioned encoder"):
        model(pixel_values=torch.randn(1, 4, 32, 32), wavelengths=GF2_WAVELENGTHS)


def test_num_queries_follows_num_expert_tokens_unless_both_disagree():
    no_depth = dict(backbone=None, depth_backbone=None, fusion="none")
    assert SpectralMoEConfig(num_expert_tokens=10, **no_depth).num_queries == 10
    assert SpectralMoEConfig(num_queries=12, **no_depth).num_expert_tokens == 12
    assert SpectralMoEConfig(**no_depth).num_queries == SpectralMoEConfig(**no_depth).num_expert_tokens == 100
    with pytest.raises(ValueError, match=r"`num_expert_tokens` \(10\) must equal `num_queries` \(12\)"):
        SpectralMoEConfig(num_expert_tokens=10, num_queries=12, **no_depth)
