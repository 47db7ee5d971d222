"""What a Hub or geospatial user meets beside the weights: the model card's metadata and runnable usage, the
`spectral-image-segmentation` pipeline a saved folder carries, transformers' post-processing output class, and the
STAC MLM item."""

import json

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from transformers import pipeline

from modeling_spectralmoe import SpectralMoEConfig, SpectralMoEForSemanticSegmentation, SpectralMoEImageProcessor
from modeling_spectralmoe.data.benchmarks import PAPER_RESULTS, PAPER_URL
from modeling_spectralmoe.pipeline_spectralmoe import TASK
from modeling_spectralmoe.stac_mlm import STAC_MLM_FILE
from modeling_spectralmoe.trainer.model_card import LICENSE, SPACE_PATH, model_card, usage_snippets

from .conftest import TINY_LABELS, optional_import, randomize_adapter, tiny_config
from .training_fixtures import HUB_REPO

SENTINEL2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
SENTINEL2_WAVELENGTHS = [0.443, 0.49, 0.56, 0.665, 0.705, 0.74, 0.783, 0.842, 0.865, 0.945, 1.61, 2.19]
MEAN = [1200.0 + 150 * band for band in range(12)]
STD = [400.0 + 20 * band for band in range(12)]


def front_matter(card_text: str) -> dict:
    return ModelCard(card_text).data.to_dict()


@pytest.fixture(scope="module")
def sentinel2_model(tiny_encoders):
    """A tiny random 12-band model whose class and mask predictors are redrawn so that several classes win."""
    config = tiny_config(*tiny_encoders, num_channels=12, band_names=SENTINEL2_BANDS, wavelengths=SENTINEL2_WAVELENGTHS)
    torch.manual_seed(6)
    model = SpectralMoEForSemanticSegmentation(config).eval()
    model.load_pretrained_encoders()  # what the saved folder reloads them from
    randomize_adapter(model, seed=6)
    generator = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for name, parameter in model.decode_head.named_parameters():
            if "mask_embedder" in name or "class_predictor" in name:
                parameter.normal_(0, 1, generator=generator)
    return model, SpectralMoEImageProcessor(image_mean=MEAN, image_std=STD, band_names=SENTINEL2_BANDS,
                                            wavelengths=SENTINEL2_WAVELENGTHS, nodata_value=0, input_dtype="uint16")


@pytest.fixture(scope="module")
def sentinel2_folder(sentinel2_model, tmp_path_factory):
    """Saved as a user would: the processor first, then the model."""
    model, processor = sentinel2_model
    folder = tmp_path_factory.mktemp("sentinel2") / "spectralmoe-s2"
    processor.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def scene():
    """A 12-band uint16 scene (raw digital numbers) of 80 x 112 pixels, no multiple of the patch size: blocks of
    three spectra plus noise."""
    rng = np.random.default_rng(5)
    rows, columns = np.mgrid[:80, :112]
    spectra = rng.normal(MEAN, np.array(STD) * 2, (3, 12))
    image = spectra[(rows // 20 + columns // 28) % 3] + rng.normal(0, 30, (80, 112, 12))
    return image.clip(0, 10000).astype(np.uint16).transpose(2, 0, 1)


def reference_prediction(model, processor, bands):
    inputs = processor(bands, input_data_format="channels_first", return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    return outputs, inputs


# ---- model card ---------------------------------------------------------------------------------------------------

def test_trained_card_holds_the_hub_metadata_and_measured_results(reference_run):
    folder = reference_run["output_dir"] / "final_model"
    card = (folder / "README.md").read_text()
    metadata = front_matter(card)
    assert metadata["license"] == LICENSE and metadata["metrics"] == ["mean_iou"] and metadata["inference"] is False
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "image-segmentation"
    assert "base_model" not in metadata  # the tiny encoders are local folders, no Hub repos
    assert "datasets" not in metadata  # nor is the local dataset: the Hub links `datasets` entries as repo ids
    results = metadata["model-index"][0]["results"]
    assert results and all("source" not in entry for entry in results)  # measured here, not quoted
    pooled = next(entry for entry in results if entry["dataset"]["split"] == "pooled_targets")
    measured = reference_run["results"]["pooled_targets"]
    assert {m["type"]: m["value"] for m in pooled["metrics"]} == {
        "mean_iou": round(measured["mean_iou"], 2), "mean_accuracy": round(measured["mean_accuracy"], 2)}
    assert f"]({SPACE_PATH})" in card and "DINOv3 License" in card
    processor = SpectralMoEImageProcessor.from_pretrained(folder)
    for index, name in enumerate(processor.band_names):  # the bands table: name, wavelength, statistics
        row = f"| {index} | {name} | {processor.wavelengths[index]:g} | {processor.image_mean[index]:g} | "
        assert f"{row}{processor.image_std[index]:g} |" in card
    # Saved model first, processor second: the STAC item has the processor's statistics and the data's type too.
    bands = json.loads((folder / STAC_MLM_FILE).read_text())["assets"]["weights"]["bands"]
    assert [(band["name"], band["statistics"]["mean"], band["data_type"]) for band in bands] == [
        (name, mean, "uint8") for name, mean in zip(processor.band_names, processor.image_mean)]


def test_card_names_hub_encoders_as_base_models_of_an_adapter():
    config = SpectralMoEConfig(backbone="facebook/dinov3-vitl16-pretrain-lvd1689m", id2label=TINY_LABELS)
    metadata = front_matter(model_card(config, {}, "me/data", "me/model", "last", False,
                                       paper_benchmark="fbp_cross_regional"))
    assert metadata["base_model"] == [config.backbone, config.depth_backbone] and metadata["datasets"] == ["me/data"]
    assert metadata["base_model_relation"] == "adapter"
    title, mean_iou, mean_accuracy = PAPER_RESULTS["fbp_cross_regional"]
    (quoted,) = metadata["model-index"][0]["results"]
    assert quoted["source"]["url"] == PAPER_URL and title in quoted["dataset"]["name"]
    assert [m["value"] for m in quoted["metrics"]] == [mean_iou, mean_accuracy]
    dofa = SpectralMoEConfig(backbone="earthflow/DOFA/DOFA_ViT_base_e100.pth", depth_backbone=None, fusion="none",
                             num_channels=4, wavelengths=[0.83, 0.665, 0.56, 0.49], id2label=TINY_LABELS)
    assert front_matter(model_card(dofa, {}, "me/data", "me/model", "last", False))["base_model"] == ["earthflow/DOFA"]


def test_how_to_use_blocks_of_the_card_run_on_the_saved_folder(reference_run):
    folder = reference_run["output_dir"] / "final_model"
    card = (folder / "README.md").read_text()
    first, second = usage_snippets(card)
    assert f'"{HUB_REPO}"' in first
    namespace = {}
    exec(first.replace(f'"{HUB_REPO}"', repr(str(folder))), namespace)
    assert namespace["label_map"].shape == namespace["confidence"].shape == (96, 128)
    pipeline_labels = namespace["label_map"]
    exec(second, namespace)
    np.testing.assert_array_equal(namespace["label_map"].numpy(), pipeline_labels)


# ---- post-processing ----------------------------------------------------------------------------------------------

def test_segmentation_scores_come_in_transformers_output_class(sentinel2_model, scene):
    from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput

    model, processor = sentinel2_model
    outputs, inputs = reference_prediction(model, processor, scene)
    sizes = [(80, 112)]
    labels = processor.post_process_semantic_segmentation(outputs, target_sizes=sizes, pixel_mask=inputs["pixel_mask"])
    (scored,) = processor.post_process_semantic_segmentation(outputs, target_sizes=sizes,
                                                             pixel_mask=inputs["pixel_mask"],
                                                             return_segmentation_scores=True)
    assert isinstance(scored, SemanticSegmentationPostProcessorOutput)
    assert scored.segmentation_scores.shape == (len(TINY_LABELS), 80, 112)
    torch.testing.assert_close(scored.segmentation_scores, torch.nn.functional.interpolate(
        outputs.logits[:, :, :80, :112], size=(80, 112), mode="bilinear", align_corners=False)[0])
    assert torch.equal(scored.segmentation, labels[0])
    assert torch.equal(scored.segmentation, scored.segmentation_scores.argmax(0))  # no no-data pixel here
    assert len(labels[0].unique()) > 1
    (native,) = processor.post_process_semantic_segmentation(outputs, return_segmentation_scores=True)
    assert native.segmentation.shape == outputs.logits.shape[-2:] and torch.equal(native.segmentation_scores,
                                                                                    outputs.logits[0])


# ---- pipeline -----------------------------------------------------------------------------------------------------

def test_folder_carries_the_spectral_pipeline(sentinel2_folder):
    config = json.loads((sentinel2_folder / "config.json").read_text())
    assert config["custom_pipelines"] == {TASK: {"impl": "pipeline_spectralmoe.SpectralSegmentationPipeline",
                                                 "pt": ["AutoModelForSemanticSegmentation"], "type": "image"}}
    assert (sentinel2_folder / "pipeline_spectralmoe.py").is_file()


def test_spectral_pipeline_labels_equal_model_and_processor(sentinel2_model, sentinel2_folder, scene):
    model, processor = sentinel2_model
    outputs, inputs = reference_prediction(model, processor, scene)
    (expected,) = processor.post_process_semantic_segmentation(outputs, target_sizes=[scene.shape[-2:]],
                                                               pixel_mask=inputs["pixel_mask"],
                                                               return_segmentation_scores=True)
    segmenter = pipeline(model=str(sentinel2_folder), trust_remote_code=True)
    assert segmenter.task == TASK
    result = segmenter(scene, return_confidence=True)
    np.testing.assert_array_equal(result["label_map"], expected.segmentation.numpy())
    scores = expected.segmentation_scores
    total = scores.sum(0).numpy()  # 0 where every class's mask probability underflows: confidence 0 there
    share = np.divide(scores.max(0).values.numpy(), total, out=np.zeros_like(total), where=total > 0)
    np.testing.assert_allclose(result["confidence"], share, rtol=1e-6)
    present = np.unique(result["label_map"])
    assert [mask["label_id"] for mask in result["masks"]] == present.tolist() and len(present) > 1
    for mask in result["masks"]:
        assert mask["label"] == TINY_LABELS[mask["label_id"]]
        np.testing.assert_array_equal(mask["mask"], result["label_map"] == mask["label_id"])
    channels_last = segmenter(scene.transpose(1, 2, 0))
    np.testing.assert_array_equal(channels_last["label_map"], result["label_map"])
    assert "confidence" not in channels_last


# ---- STAC MLM -----------------------------------------------------------------------------------------------------

def test_stac_mlm_item_validates_and_holds_the_models_bands_statistics_and_classes(sentinel2_model,
                                                                                   sentinel2_folder):
    optional_import("stac_model")
    import pystac
    from stac_model.schema import MLModelExtension, MLModelProperties

    model, _ = sentinel2_model
    item = json.loads((sentinel2_folder / STAC_MLM_FILE).read_text())
    assert MLModelExtension.has_extension(pystac.Item.from_dict(item))
    properties = MLModelProperties.model_validate(item["properties"])
    assert properties.tasks == {"semantic-segmentation"} and properties.framework == "pytorch"
    assert properties.total_parameters == model.num_parameters()
    (model_input,) = properties.input
    assert list(model_input.bands) == SENTINEL2_BANDS and model_input.input.shape == [-1, 12, -1, -1]
    assert [(scaling.mean, scaling.stddev) for scaling in model_input.value_scaling] == list(zip(MEAN, STD))
    bands = item["assets"]["weights"]["bands"]
    assert [band["eo:center_wavelength"] for band in bands] == SENTINEL2_WAVELENGTHS
    assert [band["statistics"] for band in bands] == [{"mean": m, "stddev": s} for m, s in zip(MEAN, STD)]
    assert {(band["data_type"], band["nodata"]) for band in bands} == {("uint16", 0)}  # the raw value range
    (model_output,) = properties.output
    assert {(c.value, c.name) for c in model_output.classes} == set(TINY_LABELS.items())


def test_stac_mlm_item_is_the_same_whichever_is_saved_first(sentinel2_model, sentinel2_folder, tmp_path):
    model, processor = sentinel2_model
    folder = tmp_path / sentinel2_folder.name
    model.save_pretrained(folder)
    assert "value_scaling" not in json.loads((folder / STAC_MLM_FILE).read_text())["properties"]["mlm:input"][0]
    processor.save_pretrained(folder)
    assert (folder / STAC_MLM_FILE).read_text() == (sentinel2_folder / STAC_MLM_FILE).read_text()
