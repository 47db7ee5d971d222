"""Model card (README.md with Hub YAML front matter) for a trained SpectralMoE folder."""

from pathlib import Path

import yaml

from ..evaluation.protocol import MEAN_OVER_DOMAINS


def model_card(
    config,
    results: dict[str, dict],
    dataset: str,
    model_id: str,
    selection: str,
    random_encoders: bool,
    provenance: str = "",
    figures: dict[str, str] | None = None,
) -> str:
    """Markdown model card: front matter (library, pipeline tag, tags, datasets, model-index metrics), how to use it,
    and the per-domain table (both left out when there are no measured `results`).

    Args:
        config: the model's `SpectralMoEConfig`.
        results: output of `evaluation.summarize` for the selected checkpoint.
        dataset: dataset id or path the model was trained on.
        model_id: repository id the card is written for (used in the usage snippet).
        selection: how the checkpoint was selected (`last`, `source_validation`, `oracle:<split>`).
        random_encoders: the frozen encoders were randomly initialised (demo / test runs): say so in bold.
        provenance: a paragraph on where the weights come from (e.g. a converted release).
        figures: `{caption: file name}` of images saved beside the card, shown after the results.
    """
    oracle = selection.startswith("oracle:")
    front_matter = {
        "library_name": "transformers",
        "pipeline_tag": "image-segmentation",
        "tags": [
            "spectralmoe", "remote-sensing", "semantic-segmentation", "domain-generalization", "mixture-of-experts",
        ],
    }
    if Path(dataset).exists():  # a local folder's path means nothing to readers of the card: keep its name only
        dataset = Path(dataset).name
    else:
        front_matter["datasets"] = [dataset]
    measured = [_index_entry(name, m, dataset, oracle) for name, m in results.items() if "mean_iou" in m]
    if measured:
        front_matter["model-index"] = [{"name": model_id, "results": measured}]
    lines = [
        "---", yaml.safe_dump(front_matter, sort_keys=False).strip(), "---", "",
        f"# {model_id}", "",
        "SpectralMoE (Chen et al., CVPR 2026): a dual-gated mixture-of-experts adapter on a frozen "
        f"{type(config.backbone_config).__name__.replace('Config', '')} encoder, fused with depth features, and a "
        "Mask2Former head, trained on the source domain only and evaluated on unseen target domains.", "",
    ]
    if random_encoders:
        lines += ["**The frozen encoders of this model are randomly initialised (demo/test run): its numbers say "
                  "nothing about SpectralMoE's accuracy.**", ""]
    if oracle:
        lines += [f"**Oracle selection:** the checkpoint was chosen on target split `{selection[7:]}`; its target "
                  "scores are optimistic and not a domain-generalization result.", ""]
    if provenance:
        lines += [provenance, ""]
    lines += _usage(model_id) + _bands(config) + (_table(results, selection) if results else [])
    lines += [f"![{caption}]({file_name})\n" for caption, file_name in (figures or {}).items()]
    return "\n".join(lines) + "\n"


def _index_entry(name: str, metrics: dict, dataset: str, oracle: bool) -> dict:
    suffix = " (oracle selection)" if oracle else ""
    return {
        "task": {"type": "image-segmentation", "name": "Semantic segmentation"},
        "dataset": {"type": dataset, "name": f"{dataset} [{name}]", "split": name},
        "metrics": [
            {"type": "mean_iou", "name": f"mIoU{suffix}", "value": round(metrics["mean_iou"], 2)},
            {"type": "mean_accuracy", "name": f"mAcc{suffix}", "value": round(metrics["mean_accuracy"], 2)},
        ],
    }


def _usage(model_id: str) -> list[str]:
    return [
        "## How to use", "",
        "```python",
        "from transformers import pipeline",
        f'segmenter = pipeline("image-segmentation", model="{model_id}", trust_remote_code=True)',
        "masks = segmenter(image)  # one PIL mask per class present, with its label",
        "```", "",
        "Multispectral or hyperspectral input goes through the image processor and the model directly:", "",
        "```python",
        "from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation",
        f'processor = AutoImageProcessor.from_pretrained("{model_id}", trust_remote_code=True)',
        f'model = AutoModelForSemanticSegmentation.from_pretrained("{model_id}", trust_remote_code=True)',
        'inputs = processor(bands, input_data_format="channels_first", return_tensors="pt")  # (C, H, W) raw units',
        "label_map = processor.post_process_semantic_segmentation(model(**inputs), target_sizes=[bands.shape[-2:]])[0]",
        "```", "",
    ]


def _bands(config) -> list[str]:
    names = config.band_names or [f"band {i}" for i in range(config.num_channels)]
    wavelengths = config.wavelengths or [None] * config.num_channels
    rows = [f"| {i} | {name} | {'' if w is None else w} |" for i, (name, w) in enumerate(zip(names, wavelengths))]
    return ["## Input bands", "", "| index | band | wavelength (µm) |", "|---|---|---|", *rows, "",
            f"Depth encoder input (R, G, B): bands {config.depth_rgb_bands}.", ""]


def _table(results: dict[str, dict], selection: str) -> list[str]:
    lines = [f"## Results (checkpoint selection: {selection})", "",
             "| domain | mIoU | mAcc | aAcc | majority-class mIoU |", "|---|---|---|---|---|"]
    for name, metrics in results.items():
        baseline = metrics.get("baseline", {}).get("mean_iou")
        baseline_text = "" if baseline is None else f"{baseline:.2f}"
        lines.append(f"| {name} | {metrics['mean_iou']:.2f} | {metrics['mean_accuracy']:.2f} | "
                     f"{metrics['overall_accuracy']:.2f} | {baseline_text} |")
    if MEAN_OVER_DOMAINS in results:
        lines += ["", "`pooled_targets` is one confusion matrix over all target images (the paper's number)."]
    return lines + [""]
