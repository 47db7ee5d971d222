"""Segmentation metrics (SPEC §5 Evaluation): confusion-matrix accumulation, agreement with torchmetrics, pooling over
domains, all-reduce across processes, the evaluate.Metric wrapper and the majority-class baseline."""

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from modeling_spectralmoe import SegmentationMeanIoU
from modeling_spectralmoe.evaluation.segmentation_metric import ConfusionMatrix, label_histogram, majority_class_baseline


NUM_LABELS = 7


def random_segmentation(seed, shape=(3, 40, 50)):
    """Predictions never use class 6; references use neither 5 nor 6 and are ignored (255) on ~10% of pixels. So class
    5 is predicted but absent from the references, class 6 absent from both."""
    generator = torch.Generator().manual_seed(seed)
    predictions = torch.randint(0, 6, shape, generator=generator)
    references = torch.randint(0, 5, shape, generator=generator)
    references[torch.rand(shape, generator=generator) < 0.1] = 255
    return predictions, references


def test_matches_torchmetrics_jaccard_index():
    # Imported here, not at module level, so the spawned workers of the all-reduce test stay light.
    from torchmetrics.classification import MulticlassJaccardIndex

    predictions, references = random_segmentation(0)
    results = ConfusionMatrix(NUM_LABELS).update(predictions, references).compute()

    per_class = MulticlassJaccardIndex(NUM_LABELS, ignore_index=255, average=None)(predictions, references)
    macro = MulticlassJaccardIndex(NUM_LABELS, ignore_index=255, average="macro")(predictions, references)
    iou = results["per_category_iou"]
    # torchmetrics reports 0 for a class absent from predictions and references; we report NaN and leave it out of
    # the mean, as its macro average does.
    assert np.isnan(iou[6]) and per_class[6] == 0 and not np.isnan(iou[:6]).any()
    np.testing.assert_allclose(iou[:6], per_class[:6].double().numpy(), rtol=0, atol=1e-6)
    assert results["mean_iou"] == pytest.approx(macro.item(), abs=1e-6)
    assert iou[5] == 0 and np.isnan(results["per_category_accuracy"][5:]).all()


def test_accuracies_match_a_hand_count():
    references = torch.tensor([[0, 0, 1], [2, 255, 1]])
    predictions = torch.tensor([[0, 1, 1], [2, 3, 0]])  # the 3 falls on an ignored pixel: not scored
    results = ConfusionMatrix(4).update(predictions, references).compute()

    np.testing.assert_allclose(results["per_category_accuracy"], [1 / 2, 1 / 2, 1, np.nan])
    np.testing.assert_allclose(results["per_category_iou"], [1 / 3, 1 / 3, 1, np.nan])
    assert results["mean_accuracy"] == pytest.approx(2 / 3)
    assert results["overall_accuracy"] == pytest.approx(3 / 5)
    assert results["mean_iou"] == pytest.approx(5 / 9)


def test_merge_equals_accumulating_everything():
    domains = [random_segmentation(seed) for seed in range(3)]
    per_domain = [ConfusionMatrix(NUM_LABELS).update(*domain) for domain in domains]
    everything = ConfusionMatrix(NUM_LABELS)
    for domain in domains:
        everything.update(*domain)

    assert torch.equal((per_domain[0] + per_domain[1]).merge(per_domain[2]).matrix, everything.matrix)
    assert torch.equal(per_domain[0].merge(*per_domain[1:]).all_reduce().matrix, everything.matrix)  # no group: no-op
    with pytest.raises(ValueError, match="different"):
        per_domain[0] + ConfusionMatrix(NUM_LABELS + 1)


def test_rejects_labels_out_of_range_and_shape_mismatch():
    confusion = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"predictions must be in \[0, 3\).*\[3\]"):
        confusion.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"references must be in \[0, 3\).*\[9\]"):
        confusion.update(torch.tensor([0, 1]), torch.tensor([9, 1]))
    with pytest.raises(ValueError, match="do not match"):
        confusion.update(torch.zeros(2, 3), torch.zeros(3, 2))
    assert confusion.matrix.sum() == 0


def test_evaluate_metric_matches_the_accumulator(tmp_path):
    predictions, references = random_segmentation(1, shape=(2, 12, 9))
    metric = SegmentationMeanIoU(cache_dir=str(tmp_path))
    metric.add_batch(predictions=list(predictions.numpy()), references=list(references.numpy()))
    results = metric.compute(num_labels=NUM_LABELS)

    expected = ConfusionMatrix(NUM_LABELS).update(predictions, references).compute()
    for key in ("mean_iou", "mean_accuracy", "overall_accuracy"):
        assert results[key] == pytest.approx(expected[key])
    for key in ("per_category_iou", "per_category_accuracy"):
        np.testing.assert_array_equal(results[key], expected[key])


def test_majority_class_baseline():
    source_counts = label_histogram(torch.tensor([[1, 1, 0], [2, 1, 255]]), num_labels=3)
    assert source_counts.tolist() == [1, 3, 1]
    # Target references: 3 x class 0, 4 x class 1, no class 2; the model's predictions do not matter.
    target = ConfusionMatrix(3).update(torch.zeros(7, dtype=torch.long), torch.tensor([0, 0, 0, 1, 1, 1, 1]))

    baseline = majority_class_baseline(source_counts, target)

    assert baseline["majority_class"] == 1
    np.testing.assert_allclose(baseline["per_category_iou"], [0, 4 / 7, np.nan])
    assert baseline["mean_iou"] == pytest.approx(2 / 7)
    assert baseline["mean_accuracy"] == pytest.approx(1 / 2)
    assert baseline["overall_accuracy"] == pytest.approx(4 / 7)
    source_matrix = ConfusionMatrix(3).update(torch.zeros(5, dtype=torch.long), torch.ones(5, dtype=torch.long))
    assert majority_class_baseline(source_matrix, target)["mean_iou"] == baseline["mean_iou"]
    with pytest.raises(ValueError, match="Expected 3 source class counts"):
        majority_class_baseline([1, 2], target)


def _all_reduce_worker(rank, init_file, predictions, references, result_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        confusion = ConfusionMatrix(NUM_LABELS).update(predictions[rank], references[rank]).all_reduce()
        torch.save(confusion.matrix, f"{result_file}.{rank}")
    finally:
        dist.destroy_process_group()


def test_all_reduce_over_two_gloo_processes_equals_one_process(tmp_path):
    predictions, references = random_segmentation(2, shape=(2, 16, 16))  # one image per process
    mp.spawn(
        _all_reduce_worker,
        args=(tmp_path / "init", predictions, references, tmp_path / "matrix"),
        nprocs=2,
        join=True,
    )
    single_process = ConfusionMatrix(NUM_LABELS).update(predictions, references)
    for rank in range(2):
        reduced = torch.load(tmp_path / f"matrix.{rank}")
        assert torch.equal(reduced, single_process.matrix)
