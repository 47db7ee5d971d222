"""The evaluation command on a saved folder: it reproduces the training run's metrics, 2 processes give exactly the
results of 1, and a dataset with other classes is refused."""

import json

import pytest
import torch
from transformers import DINOv3ViTModel

from modeling_spectralmoe import SpectralMoEForSemanticSegmentation
from modeling_spectralmoe.data.schema import SpectralMetadata
from modeling_spectralmoe.evaluation.evaluate import main as evaluate_main
from modeling_spectralmoe.evaluation.protocol import check_dataset_matches_model

from .training_fixtures import TINY_BANDS, assert_same_results, run_module, trainable_weights


@pytest.fixture(scope="module")
def one_process_results(reference_run, tiny_dataset, tmp_path_factory) -> dict:
    output = tmp_path_factory.mktemp("eval") / "one_process.json"
    evaluate_main(["--model", str(reference_run["output_dir"] / "final_model"), "--dataset", tiny_dataset,
                   "--output", str(output)])
    return json.loads(output.read_text())


def test_saved_folder_loads_and_reproduces_the_training_metrics(reference_run, one_process_results, tiny_encoders):
    final = reference_run["output_dir"] / "final_model"
    model = SpectralMoEForSemanticSegmentation.from_pretrained(final)
    assert not model.config.encoder_weights_in_checkpoint  # adapter + head only; encoders reloaded from their paths
    reloaded, saved = model.state_dict(), trainable_weights(final)
    for name, tensor in saved.items():
        assert torch.equal(reloaded[name], tensor), name
    encoder = DINOv3ViTModel.from_pretrained(tiny_encoders[0]).state_dict()
    assert torch.equal(reloaded["visual_encoder.model.embeddings.cls_token"], encoder["embeddings.cls_token"])

    training_results = json.loads((reference_run["output_dir"] / "all_results.json").read_text())
    assert set(training_results) >= {"validation", "target_bright", "target_dim", "pooled_targets",
                                     "mean_over_target_domains"}
    assert_same_results(one_process_results, training_results)


def test_two_processes_give_exactly_the_one_process_results(reference_run, tiny_dataset, one_process_results,
                                                            tmp_path):
    output = tmp_path / "two_processes.json"
    completed = run_module("modeling_spectralmoe.evaluation.evaluate", "--model",
                           reference_run["output_dir"] / "final_model", "--dataset", tiny_dataset, "--output", output,
                           processes=2, threads=1)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert_same_results(json.loads(output.read_text()), one_process_results)


def test_evaluation_refuses_a_dataset_with_other_classes(reference_run):
    model_config = SpectralMoEForSemanticSegmentation.config_class.from_pretrained(
        reference_run["output_dir"] / "final_model")
    other = SpectralMetadata(name="x", band_names=TINY_BANDS, mean=[0.0] * 4, std=[1.0] * 4,
                             id2label={0: "water", 1: "land", 2: "cloud"})
    with pytest.raises(ValueError, match="classes .* differ from the model's"):
        check_dataset_matches_model(model_config, other)
    renamed = SpectralMetadata(name="x", band_names=["B1", "B2", "B3", "B4"], mean=[0.0] * 4, std=[1.0] * 4,
                               id2label=model_config.id2label)
    assert "cross-band" in check_dataset_matches_model(model_config, renamed)[0]


