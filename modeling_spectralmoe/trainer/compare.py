"""Reruns the paper's comparison (Tables 1-3) on any dataset: every method, the same recipe, seed and data.

    spectralmoe-compare --config PRESET --dataset DIR --methods spectralmoe,rein,set,lora --output-dir DIR
        [--backbones ID,ID] [--key value ...]
    accelerate launch -m modeling_spectralmoe.trainer.compare ...      # several processes

Each (backbone, method) trains in `OUTPUT/<backbone>/<method>/` through the training command's `Trainer`, is
evaluated on every target domain, and leaves `comparison_entry.json`; a rerun skips the entries already there, so
an interrupted comparison resumes where it stopped (a method cut short restarts from scratch, which gives the same
numbers: runs are seeded). Then `comparison.md` (method, trainable adapter parameters in M, mIoU/mAcc per domain and
their mean), `comparison.csv` and `comparison.png` are written from all entries, with each method's training step
time and the memory its step saves for backward, measured in the same run.
"""

import argparse
import csv
import json
import statistics
import time
from pathlib import Path

import torch

from ..data.loading import ProcessorCollator, SegmentationSplit
from ..evaluation.protocol import MEAN_OVER_DOMAINS, POOLED
from .plots import _pyplot
from .run_config import load_run_config
from .trainer import Trainer

ENTRY = "comparison_entry.json"
TIMED_STEPS = 3
# Methods whose output for one image depends on the other images of its batch (SET's FFT over the batch axis): their
# scores hold only for the evaluation batch size they were measured with, which the table records.
BATCH_MIXING = ("set",)


def trainable_adapter_parameters(model) -> int:
    """Parameters a method trains besides the decoder head (its query table and injected ones included)."""
    return sum(p.numel() for name, p in model.named_parameters() if p.requires_grad and not name.startswith(
        "decode_head."))


def step_cost(trainer: Trainer) -> tuple[float, float]:
    """Median seconds of a training step's forward and backward on one training batch, and the megabytes of
    tensors that step saves for backward (a device-independent measure of its activation memory)."""
    model = trainer.model.train()
    split = SegmentationSplit(trainer.dataset[trainer.metadata.source_split])
    batch = ProcessorCollator(trainer.processor)([split[index] for index in range(min(2, len(split)))])
    saved = []

    def remember(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    times = []
    with torch.random.fork_rng():  # the measurement must not change the training's random draws
        for _ in range(TIMED_STEPS + 1):  # the first step warms up
            saved.clear()
            start = time.perf_counter()
            with torch.autograd.graph.saved_tensors_hooks(remember, lambda tensor: tensor):
                loss = model(**batch).loss
            loss.backward()
            times.append(time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    return statistics.median(times[1:]), sum(saved) / 2**20


def run_method(preset: str, overrides: list[str], directory: Path, method: str, backbone: str | None) -> dict:
    """Trains and evaluates one method; returns (and writes) its comparison entry."""
    settings = [*overrides, "--model.adapter_type", method, "--output_dir", str(directory)]
    if backbone:
        settings += ["--model.backbone", backbone]
    if directory.exists():  # cut short by an interruption: start it again
        settings += ["--overwrite_output_dir", "true"]
    trainer = Trainer(load_run_config(preset, settings))
    seconds, saved_mb = step_cost(trainer)
    entry = {
        "method": method, "backbone": backbone or trainer.model_config.backbone,
        "adapter_parameters": trainable_adapter_parameters(trainer.model),
        "step_seconds": seconds, "saved_for_backward_mb": saved_mb,
        "evaluation_batch_size": trainer.run.evaluation.batch_size, "results": trainer.train(),
    }
    if trainer.accelerator.is_main_process:
        (directory / ENTRY).write_text(json.dumps(entry, indent=2))
    return entry


def table_rows(entries: list[dict]) -> tuple[list[str], list[list]]:
    """Header and rows: one row per (backbone, method), mIoU and mAcc per target domain, the pooled targets and the
    mean over target domains."""
    domains = [name for name in entries[0]["results"] if name not in ("validation", POOLED, MEAN_OVER_DOMAINS)]
    columns = [*domains, *(name for name in (POOLED, MEAN_OVER_DOMAINS) if name in entries[0]["results"])]
    header = ["backbone", "method", "adapter params (M)", *(f"{name} {metric}" for name in columns
                                                          for metric in ("mIoU", "mAcc")),
              "step time (s)", "saved for backward (MB)"]
    rows = []
    for entry in entries:
        scores = [entry["results"][name][metric] for name in columns for metric in ("mean_iou", "mean_accuracy")]
        rows.append([entry["backbone"], entry["method"], entry["adapter_parameters"] / 1e6, *scores,
                     entry["step_seconds"], entry["saved_for_backward_mb"]])
    return header, rows


def write_outputs(entries: list[dict], output_dir: Path) -> None:
    header, rows = table_rows(entries)
    with open(output_dir / "comparison.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    formatted = [[value if isinstance(value, str) else f"{value:.2f}" for value in row] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in formatted]
    notes = [
        f"- {entry['method']} mixes the images of a batch: evaluated {entry['evaluation_batch_size']} image(s) at a "
        "time, one window at a time." for entry in entries if entry["method"] in BATCH_MIXING
    ]
    (output_dir / "comparison.md").write_text(
        "# Method comparison\n\nSame recipe, seed and data for every method; scores in %, step time and memory "
        "measured in this run.\n\n" + "\n".join(lines) + "\n" + ("\n" + "\n".join(notes) + "\n" if notes else "")
    )
    save_comparison_chart(header, rows, output_dir / "comparison.png")


def save_comparison_chart(header: list[str], rows: list[list], path: Path) -> None:
    """Grouped bars: mIoU per domain column, one bar per (backbone, method)."""
    plt = _pyplot()
    columns = [index for index, name in enumerate(header) if name.endswith(" mIoU")]
    figure, axis = plt.subplots(figsize=(1.2 * len(columns) * max(1, len(rows)) / 2 + 3, 3.8))
    width = 0.8 / len(rows)
    for offset, row in enumerate(rows):
        positions = [index + offset * width for index in range(len(columns))]
        axis.bar(positions, [row[column] for column in columns], width=width, label=f"{row[1]} ({row[0]})"[:40])
    axis.set_xticks([index + 0.4 - width / 2 for index in range(len(columns))],
                    [header[column].removesuffix(" mIoU").replace("_", "\n") for column in columns], fontsize=8)
    axis.set_ylabel("mIoU (%)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def compare(preset: str, methods: list[str], output_dir: Path, backbones: list[str | None] = (None,),
            overrides: list[str] = ()) -> list[dict]:
    """Runs (or reuses) every (backbone, method) and writes the comparison; returns the entries in table order."""
    entries = []
    for backbone in backbones:
        for method in methods:
            directory = output_dir / (Path(backbone).name if backbone else "default") / method
            if (directory / ENTRY).is_file():
                print(f"compare: {method} on {backbone or 'the preset backbone'} is done, skipping it")
                entries.append(json.loads((directory / ENTRY).read_text()))
            else:
                entries.append(run_method(preset, list(overrides), directory, method, backbone))
    write_outputs(entries, output_dir)
    return entries


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML preset: a file, or a packaged preset's name")
    parser.add_argument("--methods", required=True, help="comma-separated adapter types, e.g. spectralmoe,rein,set")
    parser.add_argument("--output-dir", required=True, type=Path)
    parser.add_argument("--backbones", help="comma-separated visual encoders (Hub ids or folders); default: preset's")
    args, overrides = parser.parse_known_args(argv)
    backbones = args.backbones.split(",") if args.backbones else [None]
    try:
        compare(args.config, args.methods.split(","), args.output_dir, backbones, overrides)
    except (ValueError, FileNotFoundError) as error:
        parser.exit(2, f"error: {error}\n")
    print((args.output_dir / "comparison.md").read_text())


if __name__ == "__main__":
    main()
