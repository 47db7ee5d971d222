"""SpectralMoE: dual-gated mixture-of-experts adapters on frozen foundation models for domain-generalized
semantic segmentation of hyperspectral, multispectral and RGB remote-sensing imagery (Chen et al., CVPR 2026)."""

import importlib

# Public name -> module that defines it; modules are imported on first use so `import modeling_spectralmoe` is cheap.
_EXPORTS = {
    "SpectralMoEConfig": "configuration_spectralmoe",
    "DOFAConfig": "configuration_dofa",
    "DOFAModel": "modeling_dofa",
    "convert_official_dofa_state_dict": "modeling_dofa",
    "load_dofa_weights": "modeling_dofa",
    "EVA02Config": "configuration_eva02",
    "EVA02Model": "modeling_eva02",
    "convert_eva02_state_dict": "modeling_eva02",
    "read_eva02_weights": "modeling_eva02",
    "SpectralMoEAdapter": "spectralmoe_adapter",
    "ReinAdapter": "rein_adapter",
    "SETAdapter": "set_adapter",
    "FADAAdapter": "fada_adapter",
    "LoRAAdapter": "lora_adapter",
    "AdaptFormerAdapter": "adaptformer_adapter",
    "VPTAdapter": "vpt_adapter",
    "AdapterOutput": "adapter_protocol",
    "TokenAdapter": "adapter_protocol",
    "SpectralMoEMask2FormerHead": "mask2former_head",
    "SpectralMoEImageProcessor": "image_processing_spectralmoe",
    "SpectralMoEForSemanticSegmentation": "modeling_spectralmoe",
    "SpectralMoEPreTrainedModel": "modeling_spectralmoe",
    "SpectralMoESemanticSegmenterOutput": "modeling_spectralmoe",
    "SpectralSegmentationPipeline": "pipeline_spectralmoe",
    "write_stac_mlm": "stac_mlm",
    "SegmentationMeanIoU": "evaluation.segmentation_mean_iou",
    "ConfusionMatrix": "evaluation.segmentation_metric",
    "label_histogram": "evaluation.segmentation_metric",
    "majority_class_baseline": "evaluation.segmentation_metric",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
    return getattr(module, name)
