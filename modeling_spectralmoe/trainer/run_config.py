"""Run configuration of `training/train.py`: a YAML preset from `configuration/`, plus command-line overrides."""

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class EvaluationConfig:
    """How target images are evaluated.

    Args:
        mode: `"whole"` (one pass per image) or `"slide"` (windows of `crop` pixels every `stride`, logits averaged).
        crop: sliding-window side.
        stride: sliding-window step (341 for 512 windows in the paper).
        batch_size: images per evaluation batch.
    """

    mode: str = "whole"
    crop: int = 512
    stride: int = 341
    batch_size: int = 1


@dataclass
class RunConfig:
    """Everything `training/train.py` needs besides the model architecture.

    Args:
        dataset: `datasets` dataset (Hub id, `save_to_disk` folder or folder of parquet files) in the schema of
            DESIGN.md, with its `spectral_metadata.json`.
        output_dir: where checkpoints, logs, metrics and the final model go.
        model: `SpectralMoEConfig` fields; band metadata, statistics and labels are filled from the dataset.
        seed: random seed of model init, data order and augmentation.
        epochs: passes over the source split.
        max_steps: stop after this many optimizer steps (overrides `epochs` for the schedule when set).
        per_device_batch_size: images per process and step (the paper: 4 on each of 2 GPUs).
        gradient_accumulation_steps: micro-batches per optimizer step.
        learning_rate, weight_decay, betas, poly_power: AdamW and poly schedule (SPEC §5).
        mixed_precision: `"no"`, `"bf16"` or `"fp16"` (accelerate autocast).
        augmentation: fields of `AugmentationConfig` (crop size, scale range, cat_max_ratio, flip, photometric).
        normalization: `{"mean": [...], "std": [...]}` in raw units to pin a paper's values; defaults to the dataset's.
        evaluation: fields of `EvaluationConfig`.
        eval_every_epochs: evaluate after every this many epochs (and at the end).
        model_selection: `"last"` (default), `"source_validation"` (best mIoU on the source validation split) or
            `"oracle:<split>"` (best on a target split; peeks at the target, labelled "oracle" everywhere).
        checkpointing_steps: `save_state` every this many optimizer steps (and at every epoch end).
        checkpoints_total_limit: keep only the newest this many checkpoints.
        resume_from_checkpoint: a checkpoint folder, or `"latest"` for the newest in `output_dir`.
        overwrite_output_dir: start a new run in an `output_dir` that holds another run's checkpoints (deleting
            them); without it such a start is refused, so nothing is lost by a forgotten `--resume_from_checkpoint`.
        router_diagnostics_steps: log router statistics every this many steps (0 disables).
        report_to: accelerate tracker (`"tensorboard"`) or `"none"`.
        push_to_hub: upload the final model folder to `hub_model_id`.
        hub_model_id: Hub repository of the upload.
        num_workers: DataLoader workers.
    """

    dataset: str = ""
    output_dir: str = "outputs/spectralmoe"
    model: dict[str, Any] = field(default_factory=dict)
    seed: int = 42
    epochs: int = 20
    max_steps: int | None = None
    per_device_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    poly_power: float = 0.9
    mixed_precision: str = "no"
    augmentation: dict[str, Any] = field(default_factory=dict)
    normalization: dict[str, list[float]] | None = None
    evaluation: dict[str, Any] = field(default_factory=dict)
    eval_every_epochs: int = 1
    model_selection: str = "last"
    checkpointing_steps: int = 500
    checkpoints_total_limit: int = 2
    resume_from_checkpoint: str | None = None
    overwrite_output_dir: bool = False
    router_diagnostics_steps: int = 50
    report_to: str = "tensorboard"
    push_to_hub: bool = False
    hub_model_id: str | None = None
    num_workers: int = 0

    def __post_init__(self):
        for item in dataclasses.fields(self):  # e.g. `--epochs two` fails here, naming the setting
            default, value = item.default, getattr(self, item.name)
            expected = (int, float) if type(default) is float else type(default)
            if type(default) in (int, float, bool, str) and not isinstance(value, expected):
                raise ValueError(f"`{item.name}` must be of type {type(default).__name__}, found {value!r}.")
        if self.model_selection not in ("last", "source_validation") and not self.model_selection.startswith("oracle:"):
            raise ValueError(
                f"`model_selection` must be 'last', 'source_validation' or 'oracle:<split>', found "
                f"{self.model_selection!r}."
            )

    @property
    def oracle_split(self) -> str | None:
        return self.model_selection.split(":", 1)[1] if self.model_selection.startswith("oracle:") else None


def _read_preset(path: Path) -> dict:
    """Reads a YAML preset; `inherit: other.yaml` (relative to it) is read first and deep-merged under it."""
    with open(path) as handle:
        values = yaml.safe_load(handle) or {}
    parent = values.pop("inherit", None)
    if parent is None:
        return values
    return deep_merge(_read_preset(path.parent / parent), values)


def deep_merge(base: dict, update: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_overrides(arguments: list[str]) -> dict:
    """`--a.b value` or `--a.b=value` overrides (values parsed as YAML: numbers, booleans, lists, null) -> nested
    dict."""
    tokens = [part for argument in arguments for part in (
        argument.split("=", 1) if argument.startswith("--") and "=" in argument else [argument]
    )]
    if len(tokens) % 2:
        raise ValueError(f"Overrides come as `--key value` pairs, found an odd list: {arguments}.")
    overrides: dict = {}
    for flag, raw_value in zip(tokens[::2], tokens[1::2]):
        if not flag.startswith("--"):
            raise ValueError(f"Expected an override flag like --learning_rate, found {flag!r}.")
        *parents, leaf = flag[2:].split(".")
        node = overrides
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = _parse_value(raw_value)
    return overrides


def _parse_value(raw: str):
    """A command-line value as YAML, except that YAML 1.1 reads `1e-4` (no dot) as a string: numbers stay numbers."""
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def load_run_config(preset: str | None, overrides: list[str] = ()) -> RunConfig:
    """The preset's values, overridden by `--key value` pairs; unknown keys are an error naming them."""
    values = _read_preset(Path(preset)) if preset else {}
    values = deep_merge(values, parse_overrides(list(overrides)))
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"Unknown run settings {unknown}; known: {sorted(known)}.")
    return RunConfig(**values)
