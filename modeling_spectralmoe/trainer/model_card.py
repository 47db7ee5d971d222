"""Model card (README.md with Hub YAML front matter) of a SpectralMoE folder, trained or converted.

The front matter follows the Hub's conventions for a custom-code adapter: `license` (the adapter's own),
`base_model` (the frozen encoders' Hub repos) with `base_model_relation: adapter`, `metrics`, `inference: false` (the
hosted widget never runs custom code; the Space in the package's `examples/space/` takes its place) and a
`model-index` in which numbers quoted from the paper carry a `source` and measured ones do not."""

import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..data.benchmarks import PAPER_RESULTS, PAPER_TABLE, PAPER_URL
from ..evaluation.protocol import MEAN_OVER_DOMAINS, POOLED


LICENSE = "apache-2.0"
TAGS = ["spectralmoe", "remote-sensing", "semantic-segmentation", "domain-generalization", "mixture-of-experts",
        "multispectral"]
SPACE_PATH = "examples/space/"
# "owner/name" (optionally "/file" inside the repo, as DOFA's `.pth` checkpoints are named): a Hub repo, not a path.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/[\w./-]+)?$")


def model_card(
    config,
    results: dict[str, dict],
    dataset: str,
    model_id: str,
    selection: str,
    random_encoders: bool,
    provenance: str = "",
    figures: dict[str, str] | None = None,
    processor=None,
    paper_benchmark: str | None = None,
) -> str:
    """Markdown model card: front matter, how to use it, where to try it, the input bands, the results and figures.

    Args:
        config: the model's `SpectralMoEConfig`.
        results: output of `evaluation.summarize` for the selected checkpoint (measured here: no `source`).
        dataset: dataset id or path the model was trained on.
        model_id: repository id the card is written for (used in the usage snippet).
        selection: how the checkpoint was selected (`last`, `source_validation`, `oracle:<split>`).
        random_encoders: the frozen encoders were randomly initialised (demo / test runs): say so in bold.
        provenance: a paragraph on where the weights come from (e.g. a converted release).
        figures: `{caption: file name}` of images saved beside the card, shown after the results.
        processor: the model's `SpectralMoEImageProcessor`; its statistics fill the bands table.
        paper_benchmark: a key of `data.benchmarks.PAPER_RESULTS`: the paper's published score on that benchmark is
            quoted, with the paper as its `source`.
    """
    oracle = selection.startswith("oracle:")
    if Path(dataset).exists():  # a local folder's path means nothing to readers of the card: keep its name only
        dataset = Path(dataset).name
    datasets = [dataset] if HUB_ID.match(dataset) else None  # the Hub links `datasets` entries: repo ids only
    evaluations = [result for name, metrics in results.items() if "mean_iou" in metrics
                   for result in _measured(name, metrics, dataset, oracle)]
    evaluations += _quoted(paper_benchmark) if paper_benchmark else []
    base_models = [_hub_repo(name) for name in (config.backbone, config.depth_backbone) if _hub_repo(name)]
    metadata = ModelCardData(
        license=LICENSE, library_name="transformers", pipeline_tag="image-segmentation", tags=TAGS,
        datasets=datasets, metrics=["mean_iou"], base_model=base_models or None,
        base_model_relation="adapter" if base_models else None, inference=False,
        model_name=model_id if evaluations else None, eval_results=evaluations or None,
    )
    lines = [
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
    # A converted release says where it comes from; a trained model names its data (in the body: `datasets` only
    # takes Hub ids).
    lines += [provenance, ""] if provenance else [f"Trained on `{dataset}`.", ""]
    lines += _usage(model_id) + _try_it() + _bands(config, processor)
    lines += _table(results, selection) if results else []
    lines += _paper_table(paper_benchmark) if paper_benchmark else []
    lines += [f"![{caption}]({file_name})\n" for caption, file_name in (figures or {}).items()]
    lines += _license(base_models)
    return str(ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n" + "\n".join(lines)))


def usage_snippets(card: str) -> list[str]:
    """The python blocks of the card's "How to use" section, in order (each continues the one before)."""
    section = card.split("## How to use", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]


def _hub_repo(name: str | None) -> str | None:
    """The Hub repository an encoder name points to; `None` for local paths."""
    if not name or Path(name).exists() or not HUB_ID.match(name):
        return None
    return "/".join(name.split("/")[:2])


def _measured(name: str, metrics: dict, dataset: str, oracle: bool) -> list[EvalResult]:
    return _scores(metrics["mean_iou"], metrics["mean_accuracy"], " (oracle selection)" if oracle else "",
                   dataset_type=dataset, dataset_name=f"{dataset} [{name}]", dataset_split=name)


def _quoted(benchmark: str) -> list[EvalResult]:
    title, mean_iou, mean_accuracy = PAPER_RESULTS[benchmark]
    return _scores(mean_iou, mean_accuracy, "", dataset_type=benchmark, dataset_name=f"{title} (target domains)",
                   dataset_split=POOLED, source_name=PAPER_TABLE, source_url=PAPER_URL)


def _scores(mean_iou: float, mean_accuracy: float, suffix: str, **dataset) -> list[EvalResult]:
    """The mIoU and mAcc entries of one evaluation (`dataset`: its `EvalResult` fields, and a `source` if quoted)."""
    common = dict(task_type="image-segmentation", task_name="Semantic segmentation", **dataset)
    return [EvalResult(metric_type="mean_iou", metric_name=f"mIoU{suffix}", metric_value=round(mean_iou, 2), **common),
            EvalResult(metric_type="mean_accuracy", metric_name=f"mAcc{suffix}", metric_value=round(mean_accuracy, 2),
                       **common)]


def _usage(model_id: str) -> list[str]:
    return [
        "## How to use", "",
        "The `spectral-image-segmentation` pipeline (saved with the model) takes an N-band array in raw units; the "
        "image processor normalises it with the statistics below.", "",
        "```python",
        "import numpy as np",
        "from transformers import AutoImageProcessor, pipeline",
        "",
        f'model_id = "{model_id}"',
        "processor = AutoImageProcessor.from_pretrained(model_id, trust_remote_code=True)",
        "# Your (bands, height, width) array in the units of the table below; here a random stand-in.",
        "bands = np.random.default_rng(0).normal(processor.image_mean, processor.image_std, (96, 128, "
        "processor.num_channels)).transpose(2, 0, 1)",
        "",
        "segmenter = pipeline(model=model_id, trust_remote_code=True)  # task: spectral-image-segmentation",
        "result = segmenter(bands, return_confidence=True)",
        'label_map, confidence = result["label_map"], result["confidence"]  # (height, width) each',
        'print({mask["label"]: int(mask["mask"].sum()) for mask in result["masks"]})  # pixels per class',
        "```", "",
        "The model and processor directly (batches, other sensors' `band_names` / `wavelengths`):", "",
        "```python",
        "import torch",
        "from transformers import AutoModelForSemanticSegmentation",
        "",
        "model = AutoModelForSemanticSegmentation.from_pretrained(model_id, trust_remote_code=True).eval()",
        'inputs = processor(bands, input_data_format="channels_first", return_tensors="pt")',
        "with torch.no_grad():",
        "    outputs = model(**inputs)",
        "label_map = processor.post_process_semantic_segmentation(",
        '    outputs, target_sizes=[bands.shape[-2:]], pixel_mask=inputs["pixel_mask"])[0]',
        "```", "",
        "Whole GeoTIFF scenes of any size: `spectralmoe-predict MODEL scene.tif --output out/` (sliding windows, "
        "georeferenced class and confidence maps).", "",
    ]


def _try_it() -> list[str]:
    return [
        "## Try it", "",
        "The Hub's hosted inference widget never runs custom code, so it is off for this model (`inference: false`). "
        f"Try the model in the Gradio app of the SpectralMoE package, [`{SPACE_PATH}`]({SPACE_PATH}) (run it "
        "locally or deploy it as a Space): upload a GeoTIFF or PNG and see the class map, the confidence map and "
        "the experts' routing.", "",
    ]


def _bands(config, processor) -> list[str]:
    names = config.band_names or [f"band {i}" for i in range(config.num_channels)]
    wavelengths = config.wavelengths or [None] * config.num_channels
    means = processor.image_mean if processor is not None else [None] * config.num_channels
    stds = processor.image_std if processor is not None else [None] * config.num_channels
    rows = [
        f"| {i} | {name} | {_number(wavelength)} | {_number(mean)} | {_number(std)} |"
        for i, (name, wavelength, mean, std) in enumerate(zip(names, wavelengths, means, stds))
    ]
    return ["## Input bands", "",
            "Raw units (no division by 255); the image processor subtracts the mean and divides by the standard "
            "deviation of each band.", "",
            "| index | band | wavelength (µm) | mean | std |", "|---|---|---|---|---|", *rows, "",
            f"Depth encoder input (R, G, B): bands {config.depth_rgb_bands}.", ""]


def _number(value) -> str:
    return "" if value is None else f"{value:g}"


def _table(results: dict[str, dict], selection: str) -> list[str]:
    lines = [f"## Results (measured on this model; checkpoint selection: {selection})", "",
             "| domain | mIoU | mAcc | aAcc | majority-class mIoU |", "|---|---|---|---|---|"]
    for name, metrics in results.items():
        baseline = metrics.get("baseline", {}).get("mean_iou")
        baseline_text = "" if baseline is None else f"{baseline:.2f}"
        lines.append(f"| {name} | {metrics['mean_iou']:.2f} | {metrics['mean_accuracy']:.2f} | "
                     f"{metrics['overall_accuracy']:.2f} | {baseline_text} |")
    if MEAN_OVER_DOMAINS in results:
        lines += ["", "`pooled_targets` is one confusion matrix over all target images (the paper's number)."]
    return lines + [""]


def _paper_table(benchmark: str) -> list[str]:
    title, mean_iou, mean_accuracy = PAPER_RESULTS[benchmark]
    return ["## Published results (quoted from the paper, not re-measured here)", "",
            "| benchmark | mIoU | mAcc | source |", "|---|---|---|---|",
            f"| {title}, pooled target domains | {mean_iou:.2f} | {mean_accuracy:.2f} | [{PAPER_TABLE}]({PAPER_URL}) |",
            ""]


def _license(base_models: list[str]) -> list[str]:
    bases = ", ".join(f"[{name}](https://huggingface.co/{name})" for name in base_models) or "the frozen encoders"
    return ["## License", "",
            f"The adapter and head weights and the model code: {LICENSE}. The base models ({bases}) keep their own "
            "licences: DINOv3 is under the DINOv3 License and gated on the Hub (accept it there and log in, or set "
            "`HF_TOKEN`, before the encoders download). Folders saved with `save_encoders=True` hold the encoders' "
            "weights and inherit their licences.", ""]
