"""The offline `evaluate.Metric` for semantic segmentation, on top of [`ConfusionMatrix`].

Kept apart from `segmentation_metric.py` so that training and evaluation code, which accumulate a `ConfusionMatrix`
directly, never import the `evaluate` package (a script folder holding an `evaluate.py` would shadow it).
"""

import datasets
import evaluate
import numpy as np

from .segmentation_metric import ConfusionMatrix


_DESCRIPTION = """
Intersection over union (IoU), pixel accuracy per class and overall pixel accuracy for semantic segmentation, from one
confusion matrix accumulated over all images (so large images weigh more, as in mmsegmentation). A class absent from
both predictions and references has NaN IoU and is left out of the means; a class absent from the references has NaN
accuracy.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of 2-D int arrays): predicted class index per pixel, in [0, num_labels).
    references (`list` of 2-D int arrays): true class index per pixel, in [0, num_labels), or `ignore_index`.
    num_labels (`int`): number of classes.
    ignore_index (`int`, *optional*, defaults to 255): reference value of pixels that are not scored.

Returns:
    `mean_iou` (`float`), `mean_accuracy` (`float`), `overall_accuracy` (`float`), `per_category_iou`
    (`np.ndarray` of shape `(num_labels,)`), `per_category_accuracy` (`np.ndarray` of shape `(num_labels,)`).

Example:
    >>> import numpy as np
    >>> from modeling_spectralmoe import SegmentationMeanIoU
    >>> metric = SegmentationMeanIoU()
    >>> results = metric.compute(
    ...     predictions=[np.array([[0, 1], [1, 1]])], references=[np.array([[0, 1], [0, 255]])], num_labels=2
    ... )
    >>> round(results["mean_iou"], 4)
    0.5
"""

_CITATION = """
@article{everingham2010pascal,
  title={The Pascal Visual Object Classes (VOC) Challenge},
  author={Everingham, Mark and Van Gool, Luc and Williams, Christopher K. I. and Winn, John and Zisserman, Andrew},
  journal={International Journal of Computer Vision},
  volume={88},
  number={2},
  pages={303--338},
  year={2010}
}
"""



@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SegmentationMeanIoU(evaluate.Metric):
    """`evaluate` metric for semantic segmentation that works offline (no Hub script): mIoU, mAcc, aAcc and per-class
    IoU / accuracy from a [`ConfusionMatrix`] over all images. For streaming evaluation with `torch.distributed`,
    accumulate a [`ConfusionMatrix`] directly and call its `all_reduce`."""

    def _info(self) -> evaluate.MetricInfo:
        label_map = datasets.Sequence(datasets.Sequence(datasets.Value("int32")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": label_map, "references": label_map}),
        )

    def _compute(self, predictions, references, num_labels: int, ignore_index: int = 255) -> dict:
        confusion = ConfusionMatrix(num_labels, ignore_index)
        for prediction, reference in zip(predictions, references):
            confusion.update(np.asarray(prediction, dtype=np.int64), np.asarray(reference, dtype=np.int64))
        return confusion.compute()


__all__ = ["SegmentationMeanIoU"]
