"""Run settings: presets plus `--key value` overrides, read into typed dataclasses and refused at start, with one clear
message (and the nearest known name), when a key, a type, a value or a split is wrong."""

import pytest

from modeling_spectralmoe.data.schema import SpectralMetadata
from modeling_spectralmoe.evaluation.protocol import EvaluationConfig
from modeling_spectralmoe.trainer.run_config import Normalization, load_run_config, parse_overrides
from modeling_spectralmoe.trainer.train import main as train_main
from modeling_spectralmoe.trainer.trainer import Trainer

from .training_fixtures import write_tiny_preset


def test_overrides_accept_both_flag_forms():
    assert parse_overrides(["--learning_rate=2e-4", "--model.num_experts", "3", "--augmentation.scale_range=[1, 2]",
                            "--hub_model_id", "me/model"]) == {
        "learning_rate": 2e-4, "model": {"num_experts": 3}, "augmentation": {"scale_range": [1, 2]},
        "hub_model_id": "me/model",
    }


def test_a_preset_inherits_a_list_of_presets_in_order(tmp_path):
    (tmp_path / "fragments").mkdir()
    (tmp_path / "benchmark.yaml").write_text("seed: 1\nepochs: 3\nmodel: {num_experts: 3, top_k: 1}\n")
    (tmp_path / "fragments" / "encoder.yaml").write_text("epochs: 5\nmodel: {num_experts: 4}\n")
    (tmp_path / "run.yaml").write_text("inherit: [benchmark.yaml, fragments/encoder.yaml]\nseed: 2\n")
    run = load_run_config(str(tmp_path / "run.yaml"))
    # later parents override earlier ones, key by key; the preset itself overrides them all
    assert (run.seed, run.epochs, run.model) == (2, 5, {"num_experts": 4, "top_k": 1})


def test_settings_are_typed_at_every_level():
    run = load_run_config("demo", ["--evaluation.mode", "slide", "--augmentation.scale_range", "[1, 2]",
                                   "--normalization", "{mean: [1, 2, 3, 4], std: [5, 6, 7, 8]}", "--max_steps", "4"])
    assert run.evaluation == EvaluationConfig(mode="slide", crop=512, stride=341, batch_size=8)
    assert run.augmentation.scale_range == (1.0, 2.0) and run.augmentation.crop_size == 64
    assert run.normalization == Normalization(mean=[1.0, 2.0, 3.0, 4.0], std=[5.0, 6.0, 7.0, 8.0])
    assert run.max_steps == 4 and run.betas == (0.9, 0.999)


@pytest.mark.parametrize("overrides, message", [
    (["--evaluation.mdoe", "slide"], r"Unknown setting `evaluation.mdoe`; did you mean 'mode'\?"),
    (["--evaluation.mode", "slid"], r"`evaluation.mode` must be one of 'whole', 'slide', found 'slid'; did you mean"),
    (["--evaluation", "slide"], r"`evaluation` must be a mapping of settings, found 'slide'"),
    (["--augmentation.crop_siz", "64"], r"Unknown setting `augmentation.crop_siz`; did you mean 'crop_size'\?"),
    (["--augmentation.scale_range", "[0.5]"], r"`augmentation.scale_range` must have 2 values, found \[0.5\]"),
    (["--augmentation.flip_prob", "often"], r"`augmentation.flip_prob` must be of type float, found 'often'"),
    (["--model.num_expert", "5"], r"Unknown setting `model.num_expert`; did you mean 'num_experts'\?"),
    (["--per_device_batch_size", "0"], r"`per_device_batch_size` must be at least 1, found 0"),
    (["--epochs", "two"], r"`epochs` must be of type int, found 'two'"),
    (["--mixed_precision", "bf61"], r"found 'bf61'; did you mean 'bf16'\?"),
    (["--normalization.mean", "[1, 2, 3, 4]"], r"`normalization.std` is required"),
    (["--normalization", "{mean: [1, 2], std: [1]}"], r"`normalization` has 2 means but 1 stds"),
    (["--model_selection", "best"], r"`model_selection` must be 'last', 'source_validation' or 'oracle:<split>'"),
    (["--learning_rat", "1e-3"], r"Unknown setting `learning_rat`; did you mean 'learning_rate'\?"),
])
def test_setting_mistakes_are_named_when_loading(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_run_config("demo", overrides)


def metadata(band_names=("NIR", "R", "G", "B")) -> SpectralMetadata:
    bands = len(band_names)
    return SpectralMetadata(name="x", band_names=list(band_names), mean=[0.0] * bands, std=[1.0] * bands,
                            id2label={0: "a", 1: "b"})


@pytest.mark.parametrize("overrides, splits, message", [
    (["--normalization", "{mean: [1, 2, 3], std: [1, 1, 1]}"], ["train"],
     r"`normalization` has 3 values per statistic, but the dataset has 4 bands"),
    (["--model_selection", "oracle:target_winer"], ["train", "validation", "target_winter"],
     r"names split 'target_winer', which is not evaluated; did you mean 'target_winter'\?"),
    (["--model_selection", "oracle:train"], ["train", "target"], r"names split 'train', which is not evaluated"),
    (["--model_selection", "source_validation"], ["train", "target"], r"needs a 'validation' split"),
    (["--augmentation.rgb_bands", "[1, 2, 4]"], ["train"], r"`augmentation.rgb_bands` must be 3 band indices below 4"),
])
def test_settings_that_depend_on_the_dataset_are_checked_against_it(overrides, splits, message):
    run = load_run_config("demo", overrides)
    with pytest.raises(ValueError, match=message):
        run.check_dataset(metadata(), splits)


def test_the_train_command_refuses_a_typo_before_anything_runs(tiny_dataset, tiny_encoders, tmp_path, capsys):
    preset = write_tiny_preset(tmp_path / "run.yaml", tiny_dataset, tmp_path / "out", tiny_encoders)
    for overrides, message in [
        (["--evaluation.mdoe", "slide"], "error: Unknown setting `evaluation.mdoe`; did you mean 'mode'?"),
        (["--model_selection", "oracle:target_brigth"], "did you mean 'target_bright'?"),  # needs the dataset
    ]:
        with pytest.raises(SystemExit) as exit_info:
            train_main(["--config", preset, *overrides])
        error = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in error and "Traceback" not in error
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_resuming_without_a_checkpoint_says_so(tiny_dataset, tiny_encoders, tmp_path):
    preset = write_tiny_preset(tmp_path / "run.yaml", tiny_dataset, tmp_path / "out", tiny_encoders)
    with pytest.raises(FileNotFoundError, match="No checkpoint under .* to resume from"):
        Trainer(load_run_config(preset, ["--resume_from_checkpoint", "latest"])).train()
