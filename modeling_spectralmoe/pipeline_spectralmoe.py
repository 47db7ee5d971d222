"""The `"spectral-image-segmentation"` pipeline: semantic segmentation of N-band arrays in raw units (the built-in
`"image-segmentation"` pipeline takes RGB images only). Saved model folders name it in `config.json`'s
`custom_pipelines` and carry this file, so `pipeline(model=folder, trust_remote_code=True)` builds it."""

from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSemanticSegmentation, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY


TASK = "spectral-image-segmentation"
TASK_TYPE = "image"
MODEL_CLASSES = (AutoModelForSemanticSegmentation,)


class SpectralSegmentationPipeline(Pipeline):
    r"""
    Segments one multispectral or hyperspectral image (or a list of them): the image processor normalises the raw
    bands with the statistics the model was trained with, the model predicts, and the scores become a label map.

    Call arguments:
        inputs (`np.ndarray` or `torch.Tensor` of shape `(C, H, W)` or `(H, W, C)`, or a list of them):
            The bands in raw units (digital numbers, reflectance x 10000, ...), any dtype.
        input_data_format (`str`, *optional*):
            `"channels_first"` or `"channels_last"`; inferred when only one axis has the model's band count.
        band_names (`list[str]`, *optional*), wavelengths (`list[float]`, *optional*):
            The image's own bands when they are not the model's (see `SpectralMoEImageProcessor.band_statistics`).
        return_confidence (`bool`, *optional*, defaults to `False`):
            Also return each pixel's confidence: the chosen class's score over the sum of all classes' scores.

    Returns:
        `dict` (a list of them for a list of images) with
        - **label_map** (`np.ndarray` of shape `(H, W)`, `int64`): class index per pixel, 255 at no-data;
        - **masks** (`list[dict]`): per class present, `{"label": name, "label_id": index, "mask": (H, W) bool}`;
        - **confidence** (`np.ndarray` of shape `(H, W)`, `float32`, in [0, 1]; only with `return_confidence`).
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(self, input_data_format=None, band_names=None, wavelengths=None, return_confidence=None):
        preprocess = {"input_data_format": input_data_format, "band_names": band_names, "wavelengths": wavelengths}
        postprocess = {} if return_confidence is None else {"return_confidence": return_confidence}
        return {key: value for key, value in preprocess.items() if value is not None}, {}, postprocess

    def preprocess(self, image, **processor_kwargs) -> dict[str, Any]:
        bands = image if isinstance(image, torch.Tensor) else np.asarray(image)
        inputs = self.image_processor(bands, return_tensors="pt", **processor_kwargs)
        band_count = len(processor_kwargs.get("wavelengths") or processor_kwargs.get("band_names") or ()) or None
        inputs["target_size"] = self.image_processor.image_size(bands, processor_kwargs.get("input_data_format"),
                                                                band_count)
        return inputs

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        target_size, pixel_mask = model_inputs.pop("target_size"), model_inputs["pixel_mask"]
        return {"outputs": self.model(**model_inputs), "pixel_mask": pixel_mask, "target_size": target_size}

    def postprocess(self, model_outputs: dict[str, Any], return_confidence: bool = False) -> dict[str, Any]:
        result = self.image_processor.post_process_semantic_segmentation(
            model_outputs["outputs"], target_sizes=[model_outputs["target_size"]],
            pixel_mask=model_outputs["pixel_mask"], return_segmentation_scores=True,
        )[0]
        label_map = result.segmentation.cpu().numpy()
        id2label = self.model.config.id2label
        masks = [{"label": id2label[int(index)], "label_id": int(index), "mask": label_map == index}
                 for index in np.unique(label_map) if int(index) in id2label]
        output = {"label_map": label_map, "masks": masks}
        if return_confidence:
            scores = result.segmentation_scores.float()
            # 0 / 0 where every class's score underflows: no confidence there.
            share = torch.nan_to_num(scores.max(dim=0).values / scores.sum(dim=0), nan=0.0)
            output["confidence"] = share.cpu().numpy()
        return output


def custom_pipelines() -> dict[str, dict]:
    """`config.custom_pipelines` naming this pipeline, in the form transformers' `Pipeline.save_pretrained` writes,
    for a folder that carries this file."""
    implementation = f"{__name__.rsplit('.', 1)[-1]}.{SpectralSegmentationPipeline.__name__}"
    return {TASK: {"impl": implementation, "pt": [model.__name__ for model in MODEL_CLASSES], "type": TASK_TYPE}}


# Registered once per process: the installed package and a folder's copy of this file would otherwise overwrite each
# other (with a warning) when both are imported.
if TASK not in PIPELINE_REGISTRY.get_supported_tasks():
    PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=SpectralSegmentationPipeline, pt_model=MODEL_CLASSES,
                                        type=TASK_TYPE)
