"""The presets shipped with the package (`modeling_spectralmoe/presets`, linked as `configuration/` in a checkout): each
builds the paper's model on the meta device with the recipe of the paper (arXiv 2603.13352) and the authors' configs,
and `--config NAME` finds them from anywhere."""

import dataclasses

import numpy as np
import pytest
import torch
import yaml
from transformers import CLIPVisionModel, DINOv3ViTModel, Dinov2Model, SamVisionModel

from modeling_spectralmoe import EVA02Model, SpectralMoEForSemanticSegmentation
from modeling_spectralmoe.data.schema import SpectralMetadata
from modeling_spectralmoe.modeling_dofa import DOFAModel
from modeling_spectralmoe.modeling_spectralmoe import ADAPTERS
from modeling_spectralmoe.trainer.run_config import PRESETS_DIR, load_run_config, preset_path
from modeling_spectralmoe.trainer.trainer import build_model_config

from .training_fixtures import GF2_WAVELENGTHS, REPO


IMAGENET = {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
RGB_WAVELENGTHS = [0.665, 0.56, 0.49]
FBP_CLASSES = [
    "industrial area", "paddy field", "irrigated field", "dry cropland", "garden land", "arbor forest", "shrub forest",
    "park", "natural meadow", "artificial meadow", "river", "urban residential", "lake", "pond", "fish pond", "snow",
    "bare land", "rural residential", "stadium", "square", "road", "overpass", "railway station", "airport",
]
ISPRS_CLASSES = ["impervious surface", "building", "low vegetation", "tree", "car", "clutter"]
BENCHMARKS = {
    "whu_ohs": dict(
        bands=[f"B{index:02d}" for index in range(1, 33)], wavelengths=np.linspace(0.466, 0.940, 32).round(4).tolist(),
        classes=["farmland", "forest", "grassland", "waterbody", "built-up", "unused land", "ocean"],
        normalization={"mean": [0.0] * 32, "std": [10000.0] * 32}, depth_rgb_bands=[1, 6, 14],
    ),
    "fbp_cross_sensor": dict(
        bands=["NIR", "R", "G", "B"], wavelengths=GF2_WAVELENGTHS, classes=FBP_CLASSES, depth_rgb_bands=[1, 2, 3],
        normalization={"mean": [110.714, 85.357, 88.594, 82.444], "std": [72.380, 65.591, 63.937, 63.005]},
    ),
    "fbp_cross_regional": dict(
        bands=["NIR", "R", "G", "B"], wavelengths=GF2_WAVELENGTHS, classes=FBP_CLASSES, depth_rgb_bands=[1, 2, 3],
        normalization={"mean": [112.067, 83.535, 88.393, 82.129], "std": [73.938, 65.736, 64.701, 63.703]},
    ),
    "flair": dict(
        bands=["R", "G", "B", "NIR"], wavelengths=[0.665, 0.56, 0.49, 0.83], depth_rgb_bands=[0, 1, 2],
        classes=["building", "pervious", "impervious", "bare soil", "water", "coniferous", "deciduous", "brushwood",
                 "vineyard", "herbaceous", "agricultural", "plowed"],
        normalization={"mean": [105.08, 110.87, 101.82, 106.38], "std": [52.17, 45.38, 44.0, 39.69]},
    ),
    "loveda": dict(
        bands=["R", "G", "B"], wavelengths=RGB_WAVELENGTHS, depth_rgb_bands=[0, 1, 2], normalization=IMAGENET,
        classes=["background", "building", "road", "water", "barren", "forest", "agricultural"],
    ),
    "potsdam_vaihingen": dict(
        bands=["R", "G", "B"], wavelengths=RGB_WAVELENGTHS, depth_rgb_bands=[0, 1, 2], normalization=IMAGENET,
        classes=ISPRS_CLASSES,
    ),
    "openearthmap": dict(
        bands=["R", "G", "B"], wavelengths=RGB_WAVELENGTHS, depth_rgb_bands=[0, 1, 2],
        classes=["bareland", "rangeland", "developed space", "road", "tree", "water", "agriculture", "building"],
        normalization={"mean": [118.246, 120.441, 100.838], "std": [49.52, 44.578, 48.335]},
    ),
    "demo": dict(  # spectralmoe-build-demo: its statistics come from the data, not the preset
        bands=["NIR", "R", "G", "B"], wavelengths=GF2_WAVELENGTHS, depth_rgb_bands=[1, 2, 3], normalization=None,
        classes=["water", "vegetation", "built-up", "bare soil"],
    ),
}
BENCHMARKS["rgb"] = dict(BENCHMARKS["loveda"], normalization=None)  # the shared recipe pins no statistics

DINOV3_L = "facebook/dinov3-vitl16-pretrain-lvd1689m"
DOFA_L = "earthflow/DOFA/DOFA_ViT_large_e100.pth"
PROMPTDA_L = "depth-anything/prompt-depth-anything-vitl-hf"
MULTISPECTRAL, RGB = (0.6, 1.2), (0.5, 2.0)

# preset -> (benchmark, visual encoder, experts, fusion, shared gate, scale range, photometric, adapter parameters).
# 5,737,985 is the paper's adapter count (E = 6, D = 1024, L = 24, m = 100, r = 16, Q = 256); SPEC.md §2 gives
# "about 4.15 M" for E = 3. Routers are per layer and modality: sharing them or dropping depth halves them.
PAPER_PRESETS = {
    "whu_ohs": ("whu_ohs", DOFA_L, 6, "cross_attention", False, None, False, 5_737_985),
    "five_billion_pixels_cross_sensor": ("fbp_cross_sensor", DINOV3_L, 6, "cross_attention", False, MULTISPECTRAL, True,
                                         5_737_985),
    "five_billion_pixels_cross_regional": ("fbp_cross_regional", DINOV3_L, 6, "cross_attention", False, MULTISPECTRAL,
                                           True, 5_737_985),
    "flair": ("flair", DINOV3_L, 6, "cross_attention", False, MULTISPECTRAL, True, 5_737_985),
    "loveda": ("loveda", DINOV3_L, 3, "cross_attention", False, RGB, True, 4_148_225),
    "potsdam_vaihingen": ("potsdam_vaihingen", DINOV3_L, 6, "cross_attention", False, RGB, True, 5_737_985),
    "openearthmap": ("openearthmap", DINOV3_L, 3, "cross_attention", False, RGB, True, 4_148_225),
    "ablation_wo_moe": ("fbp_cross_sensor", DINOV3_L, 1, "cross_attention", False, MULTISPECTRAL, True, 3_088_385),
    "ablation_wo_dual_gating": ("fbp_cross_sensor", DINOV3_L, 6, "cross_attention", True, MULTISPECTRAL, True,
                                5_443_073),
    "ablation_wo_depth": ("fbp_cross_sensor", DINOV3_L, 6, "none", False, MULTISPECTRAL, True, 5_443_073),
    "ablation_wo_cross_attention": ("fbp_cross_sensor", DINOV3_L, 6, "add", False, MULTISPECTRAL, True, 5_737_985),
    "paper_recipe": ("rgb", DINOV3_L, 6, "cross_attention", False, RGB, True, 5_737_985),
}
# The baselines of the paper's Table 2 on Five-Billion-Pixels cross-sensor: preset -> (adapter type, uses depth,
# adapter parameters). Rein's count is SPEC.md §2's 2,990,081 (one bank of m = 100 tokens, r = 16, per layer);
# DepthForge has the same; the frozen baseline only learns the (100, 256) query positions.
BASELINE_PRESETS = {
    "baseline_rein": ("rein", False, 2_990_081),
    "baseline_depthforge": ("depthforge", True, 2_990_081),
    "baseline_frozen": ("frozen", False, 100 * 256),
    # The comparison methods of Tables 1-3 (counts of their official modules; + the 100 x 256 learned query table)
    "baseline_set": ("set", False, 7_546_881),
    "baseline_fada": ("fada", False, 2_045_441 + 16_384),
    "baseline_lora": ("lora", False, 786_432 + 100 * 256),
    "baseline_dora": ("dora", False, 786_432 + 24 * 2 * 1024 + 100 * 256),  # DoRA adds a magnitude per output
    "baseline_adaptformer": ("adaptformer", False, 3_171_840 + 100 * 256),
    "baseline_vpt": ("vpt", False, 3_686_400 + 100 * 256),
}
# The paper's Table 1: three 4-band benchmarks x four more frozen encoders (`inherit: [benchmark, backbone]`).
TABLE1_BENCHMARKS = {"fbp_cross_sensor": "five_billion_pixels_cross_sensor",
                     "fbp_cross_regional": "five_billion_pixels_cross_regional", "flair": "flair"}
# encoder fragment -> (Hub id, library class, width, layers, out_indices, adapted layers)
TABLE1_ENCODERS = {
    "dinov2_l": ("facebook/dinov2-large", Dinov2Model, 1024, 24, [7, 11, 15, 23], 24),
    "clip_l": ("openai/clip-vit-large-patch14", CLIPVisionModel, 1024, 24, [7, 11, 15, 23], 24),
    "sam_h": ("facebook/sam-vit-huge", SamVisionModel, 1280, 32, [7, 15, 23, 31], 4),
    "eva02_l": ("timm/eva02_large_patch14_224.mim_m38m", EVA02Model, 1024, 24, [7, 11, 15, 23], 24),
}
TABLE1_PRESETS = {f"table1_{benchmark}_{encoder}": (benchmark, encoder)
                  for benchmark in TABLE1_BENCHMARKS for encoder in TABLE1_ENCODERS}
# BASELINES.md §8, adapter parameters of Table 1's methods: ViT-L (D = 1024, 24 layers) and SAM-H adapted at its 4
# global blocks (D = 1280). FADA adds its trained Haar filter weights (16 D); the frozen baseline learns the query
# table only. SAM-H's depth methods add the 1024 -> 1280 depth projection (SAM_DEPTH_PROJECTION).
TABLE1_ADAPTER_COUNTS = {
    "spectralmoe": (5_737_985, 4_456_961), "rein": (2_990_081, 3_892_481), "depthforge": (2_990_081, 3_892_481),
    "set": (7_546_881, 7_683_841), "fada": (2_045_441 + 16_384, 2_424_321 + 20_480), "frozen": (25_600, 25_600),
}
SAM_DEPTH_PROJECTION = 1024 * 1280 + 1280
PRESET_BENCHMARK = (
    {name: expected[0] for name, expected in PAPER_PRESETS.items()} | {"demo": "demo"}
    | {name: "fbp_cross_sensor" for name in BASELINE_PRESETS}
    | {name: benchmark for name, (benchmark, _) in TABLE1_PRESETS.items()}
)


def adapter_parameter_count(layers, width, experts, tokens, rank, query_dim, routers) -> int:
    """SPEC.md §2: per layer and expert A (m, r) and B (r, D); per layer and router prototypes and noise (D, E);
    shared token2feat and delta_f (D, D + bias), the scale, transform (D -> Q) and merge (3Q -> Q)."""
    experts_tokens = layers * experts * (tokens * rank + rank * width)
    gates = layers * routers * 2 * width * experts
    return experts_tokens + gates + 2 * (width * width + width) + 1 + (width * query_dim + query_dim) + (
        3 * query_dim * query_dim + query_dim)


def benchmark_metadata(key: str) -> SpectralMetadata:
    """The metadata a builder of this benchmark writes (statistics are placeholders: the presets pin their own)."""
    benchmark = BENCHMARKS[key]
    bands = benchmark["bands"]
    return SpectralMetadata(name=key, band_names=bands, mean=[0.0] * len(bands), std=[1.0] * len(bands),
                            id2label=dict(enumerate(benchmark["classes"])), wavelengths=benchmark["wavelengths"])


def test_every_preset_is_covered_and_settings_are_dry():
    names = sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))
    assert names == sorted(PRESET_BENCHMARK), "a preset was added or removed: describe its benchmark above"
    for name in BASELINE_PRESETS:
        preset = yaml.safe_load((PRESETS_DIR / f"{name}.yaml").read_text())
        assert preset["inherit"] == "five_billion_pixels_cross_sensor.yaml"
    for name, (benchmark, encoder) in TABLE1_PRESETS.items():
        parents = yaml.safe_load((PRESETS_DIR / f"{name}.yaml").read_text())["inherit"]
        assert parents == [f"{TABLE1_BENCHMARKS[benchmark]}.yaml", f"backbones/{encoder}.yaml"]
    for name in PAPER_PRESETS:
        parent = yaml.safe_load((PRESETS_DIR / f"{name}.yaml").read_text()).get("inherit")
        if name.startswith("ablation_"):
            assert parent == "five_billion_pixels_cross_sensor.yaml"
        elif name != "paper_recipe":
            assert parent == "paper_recipe.yaml"


@pytest.mark.parametrize("name", sorted(PRESET_BENCHMARK))
def test_preset_loads_and_builds_the_paper_model_on_meta(name):
    run = load_run_config(name)  # a packaged preset, by name; every nested setting is validated
    benchmark = BENCHMARKS[PRESET_BENCHMARK[name]]
    config = build_model_config(run, benchmark_metadata(PRESET_BENCHMARK[name]))
    with torch.device("meta"):
        model = SpectralMoEForSemanticSegmentation(config)
    # Nothing downloaded, nothing allocated: only transformers' pixel decoder makes its (3, 256) level embedding with
    # the legacy `torch.Tensor(...)` constructor, which ignores the default device.
    allocated = {name for name, parameter in model.named_parameters() if not parameter.is_meta}
    assert allocated <= {"decode_head.pixel_decoder.level_embed"}
    adapter = sum(parameter.numel() for parameter in model.adapter.parameters())
    head = sum(parameter.numel() for parameter in model.decode_head.parameters())
    print(f"{name}: adapter {adapter:,} parameters (E={config.num_experts}), head {head / 1e6:.2f} M, "
          f"{config.num_channels} bands, {config.num_labels} classes")

    assert config.num_channels == len(benchmark["bands"]) and config.num_labels == len(benchmark["classes"])
    assert config.depth_rgb_bands == benchmark["depth_rgb_bands"]  # SPEC.md §3
    assert (run.normalization and dataclasses.asdict(run.normalization)) == benchmark["normalization"]
    run.check_dataset(benchmark_metadata(PRESET_BENCHMARK[name]), ["train", "target"])  # e.g. one value per band

    if name == "demo":
        tiny = config.backbone_config
        assert adapter == adapter_parameter_count(tiny.num_hidden_layers, tiny.hidden_size, config.num_experts,
                                                  config.num_expert_tokens, config.expert_rank,
                                                  config.decoder_hidden_dim, 2)
        return
    if name in TABLE1_PRESETS:
        assert_table1_encoder(model, config, TABLE1_PRESETS[name][1])
        return
    if name in BASELINE_PRESETS:
        adapter_type, uses_depth, adapter_count = BASELINE_PRESETS[name]
        assert config.adapter_type == adapter_type
        assert type(model.adapter) is ADAPTERS[adapter_type]
        assert (model.depth_encoder is not None) == uses_depth == (config.depth_backbone == PROMPTDA_L)
        trained = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
        assert trained - head == adapter_count and 20.4e6 < head < 20.7e6
        return

    _, backbone, experts, fusion, shared_gate, scale_range, photometric, adapter_count = PAPER_PRESETS[name]
    # The model of the paper: ViT-L (1024 wide, 24 layers) + PromptDA-L, m = 100 queries, r = 16, 20.6 M head.
    assert (config.backbone, config.num_experts, config.fusion, config.shared_gate) == (
        backbone, experts, fusion, shared_gate)
    assert (config.top_k, config.expert_rank, config.num_expert_tokens, config.num_queries) == (1, 16, 100, 100)
    assert (config.gating, config.perceptual_map, config.aux_loss_coef) == ("laplace", "dot_product", 1000.0)
    visual = config.backbone_config
    assert (visual.hidden_size, visual.num_hidden_layers, config.out_indices) == (1024, 24, [7, 11, 15, 23])
    assert isinstance(model.visual_encoder.model, DOFAModel if backbone == DOFA_L else DINOv3ViTModel)
    if backbone == DINOV3_L:
        assert model.visual_encoder.model.embeddings.patch_embeddings.in_channels == config.num_channels
    if fusion == "none":
        assert model.depth_encoder is None and config.depth_backbone is None
    else:
        assert config.depth_backbone == PROMPTDA_L and isinstance(model.depth_encoder.model, Dinov2Model)
        assert (config.depth_backbone_config.hidden_size, config.depth_backbone_config.num_hidden_layers) == (1024, 24)
    routers = 1 if shared_gate or fusion == "none" else 2
    assert adapter == adapter_count == adapter_parameter_count(24, 1024, experts, 100, 16, 256, routers)
    assert 20.4e6 < head < 20.7e6  # "20.6 M" in the paper; the class predictor varies with the class count

    # The recipe of SPEC.md §5.
    assert (run.seed, run.epochs, run.per_device_batch_size, run.gradient_accumulation_steps) == (42, 20, 4, 1)
    assert (run.learning_rate, run.weight_decay, tuple(run.betas), run.poly_power) == (1e-4, 0.05, (0.9, 0.999), 0.9)
    assert (run.mixed_precision, run.model_selection) == ("no", "last")
    augmentation = run.augmentation
    assert (augmentation.crop_size, augmentation.cat_max_ratio, augmentation.flip_prob) == (512, 0.75, 0.5)
    assert augmentation.scale_range == scale_range and augmentation.photometric == photometric
    assert (augmentation.brightness_delta, run.evaluation.crop) == (32, 512)



def assert_table1_encoder(model, config, encoder: str) -> None:
    """A Table 1 model: the paper's recipe and head on the named frozen encoder, at patch 16 and 512-px crops."""
    hub_id, library_class, width, layers, out_indices, adapted = TABLE1_ENCODERS[encoder]
    visual = config.backbone_config
    assert (config.backbone, type(model.visual_encoder.model)) == (hub_id, library_class)
    assert (visual.hidden_size, visual.num_hidden_layers, visual.patch_size, visual.image_size) == (
        width, layers, 16, 512)
    assert config.out_indices == out_indices and config.num_adapted_layers == adapted
    assert model.visual_encoder.model.config.num_channels == config.num_channels == 4
    assert config.depth_backbone == PROMPTDA_L and (model.depth_projection is not None) == (width != 1024)


@pytest.mark.parametrize("encoder", TABLE1_ENCODERS)
def test_table1_methods_have_the_adapter_sizes_of_the_official_modules(encoder):
    """Every method of a Table 1 row, as `spectralmoe-compare --methods` builds it from the row's preset, on the meta
    device: adapter parameters as BASELINES.md §8 counts them."""
    for adapter_type, counts in TABLE1_ADAPTER_COUNTS.items():
        run = load_run_config(f"table1_flair_{encoder}", ["--model.adapter_type", adapter_type])
        config = build_model_config(run, benchmark_metadata("flair"))
        with torch.device("meta"):
            model = SpectralMoEForSemanticSegmentation(config)
        head = sum(parameter.numel() for parameter in model.decode_head.parameters())
        trained = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
        sam = encoder == "sam_h"
        projection = SAM_DEPTH_PROJECTION if sam and config.uses_depth else 0
        assert trained - head == counts[sam] + projection, adapter_type
        assert type(model.adapter) is ADAPTERS[adapter_type]


def test_presets_are_found_by_name_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # as after a wheel install: no checkout around
    assert preset_path("demo") == preset_path("demo.yaml") == PRESETS_DIR / "demo.yaml"
    own = tmp_path / "mine.yaml"
    own.write_text("inherit: " + str(PRESETS_DIR / "demo.yaml") + "\nseed: 7\n")
    assert load_run_config(str(own)).seed == 7
    with pytest.raises(FileNotFoundError, match="did you mean 'flair'"):
        preset_path("flari")
    # In a checkout, configuration/ is the same folder (a link), so both spellings of a preset agree.
    assert (REPO / "configuration").resolve() == PRESETS_DIR.resolve()
