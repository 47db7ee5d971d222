"""Semantic segmentation metrics (mIoU, mAcc, aAcc, per-class IoU and accuracy) from a confusion matrix that can be
accumulated in streaming fashion, summed over domains and all-reduced across `torch.distributed` processes, and the
majority-class baseline. The `evaluate.Metric` on top of it is in `segmentation_mean_iou.py`."""

import numpy as np
import torch
import torch.distributed as dist


class ConfusionMatrix:
    r"""
    Pixel confusion matrix of a semantic segmentation, accumulated over batches.

    `matrix[r, p]` counts the pixels of reference class `r` predicted as class `p`; pixels whose reference is
    `ignore_index` are not counted. Per-domain matrices add up to the matrix of the pooled domains (`merge` or `+`).

    Args:
        num_labels (`int`):
            Number of classes K.
        ignore_index (`int`, *optional*, defaults to 255):
            Reference value of pixels that are not scored.
        device (`torch.device` or `str`, *optional*, defaults to CPU):
            Where the (K, K) int64 matrix lives; it must suit the process group's backend for `all_reduce` (CPU for
            gloo, CUDA for NCCL).

    Example:
        ```python
        >>> confusion = ConfusionMatrix(num_labels=7)
        >>> for batch in loader:
        ...     confusion.update(model(**batch).logits.argmax(1), batch["labels"])
        >>> confusion.all_reduce().compute()["mean_iou"]
        ```
    """

    def __init__(self, num_labels: int, ignore_index: int = 255, device: torch.device | str | None = None):
        if num_labels < 1:
            raise ValueError(f"`num_labels` must be positive, found {num_labels}.")
        self.num_labels = num_labels
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_labels, num_labels, dtype=torch.int64, device=device)

    def update(self, predictions, references) -> "ConfusionMatrix":
        r"""
        Adds one batch.

        Args:
            predictions (`torch.LongTensor` or array of any shape):
                Predicted class per pixel, in [0, K) wherever the reference is not ignored.
            references (`torch.LongTensor` or array of the same shape):
                True class per pixel, in [0, K) or `ignore_index`.

        Returns:
            `self`, updated in place.
        """
        references = torch.as_tensor(references)
        predictions = torch.as_tensor(predictions, device=references.device)
        if predictions.shape != references.shape:
            raise ValueError(
                f"Predictions of shape {tuple(predictions.shape)} do not match references of shape "
                f"{tuple(references.shape)}."
            )
        scored = references != self.ignore_index
        references = _checked_labels(references[scored], self.num_labels, "references")
        predictions = _checked_labels(predictions[scored], self.num_labels, "predictions")
        # One bincount over the flattened (reference, prediction) pair index fills the whole matrix at once; it runs
        # where the inputs live, and only the K x K counts move to the matrix's device.
        pairs = references * self.num_labels + predictions
        counts = torch.bincount(pairs, minlength=self.num_labels**2).reshape(self.num_labels, self.num_labels)
        self.matrix += counts.to(self.matrix.device)
        return self

    def all_reduce(self) -> "ConfusionMatrix":
        """Sums the matrix over all `torch.distributed` processes, in place (a no-op when no process group is
        initialised). Call it once, after the last `update`; every process then holds the global matrix. Returns
        `self`."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)
        return self

    def merge(self, *others: "ConfusionMatrix") -> "ConfusionMatrix":
        """A new matrix holding the sum of this one and `others` (e.g. the pooled target set from per-domain
        matrices); all must have the same `num_labels` and `ignore_index`."""
        merged = ConfusionMatrix(self.num_labels, self.ignore_index, self.matrix.device)
        merged.matrix += self.matrix
        for other in others:
            if (other.num_labels, other.ignore_index) != (self.num_labels, self.ignore_index):
                raise ValueError(
                    "Cannot merge confusion matrices with different (num_labels, ignore_index): "
                    f"{(self.num_labels, self.ignore_index)} and {(other.num_labels, other.ignore_index)}."
                )
            merged.matrix += other.matrix.to(merged.matrix.device)
        return merged

    __add__ = merge

    @property
    def reference_counts(self) -> torch.Tensor:
        """(K,) number of scored pixels of each reference class."""
        return self.matrix.sum(dim=1)

    def compute(self) -> dict:
        r"""
        Returns:
            `dict` with
            - **mean_iou** (`float`): mean IoU over the classes present in predictions or references.
            - **mean_accuracy** (`float`): mean per-class accuracy over the classes present in the references.
            - **overall_accuracy** (`float`): correctly predicted scored pixels / scored pixels (aAcc).
            - **per_category_iou** (`np.ndarray` of shape `(K,)`): NaN for a class absent from both.
            - **per_category_accuracy** (`np.ndarray` of shape `(K,)`): recall; NaN for a class absent from the
              references.
            Every value is NaN when no pixel was scored.
        """
        matrix = self.matrix.double().cpu().numpy()
        true_positives = np.diag(matrix)
        references, predictions = matrix.sum(axis=1), matrix.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = true_positives / (references + predictions - true_positives)
            accuracy = true_positives / references
            overall_accuracy = true_positives.sum() / matrix.sum()
        return {
            "mean_iou": _nanmean(iou),
            "mean_accuracy": _nanmean(accuracy),
            "overall_accuracy": float(overall_accuracy),
            "per_category_iou": iou,
            "per_category_accuracy": accuracy,
        }


def label_histogram(labels, num_labels: int, ignore_index: int = 255) -> torch.Tensor:
    r"""
    Pixel count of each class, e.g. over the training source split for [`majority_class_baseline`].

    Args:
        labels (`torch.LongTensor` or array of any shape): class per pixel, in [0, K) or `ignore_index`.
        num_labels (`int`): number of classes K.
        ignore_index (`int`, *optional*, defaults to 255): value of pixels that are not counted.

    Returns:
        `torch.LongTensor` of shape `(K,)`; add the histograms of several batches to get a split's.
    """
    labels = torch.as_tensor(labels)
    labels = _checked_labels(labels[labels != ignore_index], num_labels, "labels")
    return torch.bincount(labels, minlength=num_labels)


def majority_class_baseline(source_label_counts, target: ConfusionMatrix) -> dict:
    r"""
    Metrics of a constant predictor of the source split's most frequent class, scored on the references that
    `target` has accumulated: the floor a trained model must beat.

    Args:
        source_label_counts (`torch.Tensor`, `np.ndarray`, sequence of K ints, or [`ConfusionMatrix`]):
            Pixel count per class in the training source split (see [`label_histogram`]), or a confusion matrix
            accumulated on it (its reference counts are used).
        target ([`ConfusionMatrix`]):
            Matrix of the split to score on; only its reference counts matter.

    Returns:
        `dict`: [`ConfusionMatrix.compute`]'s metrics plus **majority_class** (`int`).
    """
    if isinstance(source_label_counts, ConfusionMatrix):
        source_label_counts = source_label_counts.reference_counts
    counts = torch.as_tensor(source_label_counts)
    if counts.shape != (target.num_labels,):
        raise ValueError(
            f"Expected {target.num_labels} source class counts (one per class), found shape {tuple(counts.shape)}."
        )
    majority_class = int(counts.argmax())
    baseline = ConfusionMatrix(target.num_labels, target.ignore_index, target.matrix.device)
    # Every scored reference pixel is predicted as the majority class: the whole mass sits in its column.
    baseline.matrix[:, majority_class] = target.reference_counts
    return {**baseline.compute(), "majority_class": majority_class}


def _checked_labels(labels: torch.Tensor, num_labels: int, name: str) -> torch.Tensor:
    """`labels` as int64, or a ValueError naming the values outside [0, num_labels)."""
    outside = labels[(labels < 0) | (labels >= num_labels)]
    if outside.numel():
        raise ValueError(
            f"{name} must be in [0, {num_labels}) where scored; found {outside.unique()[:10].tolist()}."
        )
    return labels.long()


def _nanmean(values: np.ndarray) -> float:
    """Mean over the non-NaN entries; NaN (without numpy's empty-slice warning) when there are none."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


__all__ = ["ConfusionMatrix", "label_histogram", "majority_class_baseline"]
