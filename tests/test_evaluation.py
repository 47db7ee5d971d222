"""Evaluation protocol: sliding windows, per-domain / pooled / mean summaries and the majority-class baseline."""

import pytest
import torch
from torch import nn
from transformers.utils import ModelOutput

from modeling_spectralmoe.evaluation.protocol import (
    MEAN_OVER_DOMAINS, POOLED, EvaluationConfig, predict_logits, summarize,
)
from modeling_spectralmoe.evaluation.segmentation_metric import ConfusionMatrix
from modeling_spectralmoe.inference.windows import window_starts


class PixelwiseModel(nn.Module):
    """Logits that depend only on each pixel, so whole-image and windowed inference must agree exactly."""

    def forward(self, pixel_values):
        self.calls = getattr(self, "calls", 0) + 1
        return ModelOutput(logits=torch.stack([pixel_values[:, 0], -pixel_values[:, 0], pixel_values[:, 1]], dim=1))


def test_sliding_windows_average_to_the_whole_image_prediction():
    model = PixelwiseModel()
    pixel_values = torch.randn(2, 3, 96, 160)
    whole = predict_logits(model, pixel_values, EvaluationConfig(mode="whole"))
    model.calls = 0
    windowed = predict_logits(model, pixel_values, EvaluationConfig(mode="slide", crop=64, stride=48))
    torch.testing.assert_close(windowed, whole)
    assert model.calls == len(window_starts(96, 64, 48)) * len(window_starts(160, 64, 48)) == 2 * 3


def test_bad_input_08_slide_stride_larger_than_the_crop_is_refused():
    with pytest.raises(ValueError, match="leaves gaps"):
        EvaluationConfig(mode="slide", crop=512, stride=600)


def test_unknown_evaluation_mode_is_refused():
    with pytest.raises(ValueError, match="'whole' or 'slide'"):
        predict_logits(PixelwiseModel(), torch.zeros(1, 3, 16, 16), EvaluationConfig(mode="tiles"))


def confusion(pairs: list[tuple[int, int]], count: int = 1) -> ConfusionMatrix:
    matrix = ConfusionMatrix(2)
    references, predictions = zip(*pairs)
    return matrix.update(torch.tensor(predictions * count), torch.tensor(references * count))


def test_pooled_targets_use_one_confusion_matrix_and_the_mean_averages_domains():
    first = confusion([(0, 0), (1, 1)])  # perfect
    second = confusion([(0, 1), (1, 1)], count=3)  # class 0 always missed, 3x as many pixels
    results = summarize({"validation": first, "target_a": first, "target_b": second}, ["target_a", "target_b"],
                        {0: "land", 1: "water"}, source_label_counts=torch.tensor([10, 1]))
    assert results["target_a"]["mean_iou"] == pytest.approx(100.0)
    assert results["target_b"]["mean_iou"] == pytest.approx(25.0)  # IoU 0 and 3/6
    # Pooled: class 0 has 1 hit of 4 references, class 1 4 hits of 4 references and 7 predictions.
    assert results[POOLED]["mean_iou"] == pytest.approx(100 * (1 / 4 + 4 / 7) / 2)
    assert results[MEAN_OVER_DOMAINS]["mean_iou"] == pytest.approx((100.0 + 25.0) / 2)
    # The source's majority class (land) predicted on all 6 target_b pixels: land IoU 3/6, water IoU 0.
    assert results["target_b"]["baseline"]["mean_iou"] == pytest.approx(100 * (3 / 6) / 2)
    assert results["target_b"]["baseline"]["majority_class"] == "land"
    assert results["target_a"]["per_category_iou"] == {"land": pytest.approx(100.0), "water": pytest.approx(100.0)}
