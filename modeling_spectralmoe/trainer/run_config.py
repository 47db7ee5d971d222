"""Run settings of `spectralmoe-train`: a YAML preset (a file, or the name of one of the package's presets), plus
command-line overrides, read into typed dataclasses and validated when the run starts.

Every level is checked the same way (`settings_from_dict`): unknown keys (with the nearest known ones), types, values
below a field's `minimum` or outside its `choices` (both declared in the field's metadata). Checks that need the
dataset (band count, split names) are in `RunConfig.check_dataset`.
"""

import copy
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..configuration_spectralmoe import SpectralMoEConfig
from ..data.augmentation import AugmentationConfig
from ..evaluation.protocol import VALIDATION, EvaluationConfig


PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"
POSITIVE = {"minimum": 1}
NON_NEGATIVE = {"minimum": 0}


@dataclass
class Normalization:
    """Per-band statistics in the input's raw units that pin a paper's normalisation.

    Args:
        mean: one value per band.
        std: one positive value per band.
    """

    mean: list[float]
    std: list[float]

    def __post_init__(self):
        if len(self.mean) != len(self.std):
            raise ValueError(f"`normalization` has {len(self.mean)} means but {len(self.std)} stds.")
        if any(value <= 0 for value in self.std):
            raise ValueError(f"`normalization.std` must be positive, found {self.std}.")


@dataclass
class RunConfig:
    """Everything `spectralmoe-train` needs besides the model architecture.

    Args:
        dataset: `datasets` dataset (Hub id, `save_to_disk` folder or folder of parquet files) in the package's schema
            (`modeling_spectralmoe.data.schema`), with its `spectral_metadata.json`.
        output_dir: where checkpoints, logs, metrics and the final model go.
        model: `SpectralMoEConfig` fields; band metadata, statistics and labels are filled from the dataset.
        seed: random seed of model init, data order and augmentation.
        epochs: passes over the source split.
        max_steps: stop after this many optimizer steps (overrides `epochs` for the schedule when set).
        per_device_batch_size: images per process and step (the paper: 4 on each of 2 GPUs).
        gradient_accumulation_steps: micro-batches per optimizer step.
        learning_rate, weight_decay, betas, poly_power: AdamW and poly schedule (arXiv 2603.13352 and the authors'
            configs).
        mixed_precision: `"no"`, `"bf16"` or `"fp16"` (accelerate autocast).
        augmentation: `AugmentationConfig` (crop size, scale range, cat_max_ratio, flip, photometric).
        normalization: `Normalization` (`{"mean": [...], "std": [...]}`, one value per band of the dataset, raw units)
            to pin a paper's values; defaults to the dataset's statistics.
        evaluation: `EvaluationConfig` (whole or sliding-window).
        eval_every_epochs: evaluate after every this many epochs (and at the end).
        model_selection: `"last"` (default), `"source_validation"` (best mIoU on the dataset's `validation` split) or
            `"oracle:<split>"` (best on an evaluated split; peeks at the target, labelled "oracle" everywhere).
        checkpointing_steps: `save_state` every this many optimizer steps (and at every epoch end).
        checkpoints_total_limit: keep only the newest this many checkpoints.
        resume_from_checkpoint: a checkpoint folder, or `"latest"` for the newest in `output_dir`.
        save_encoders: also write the frozen encoders' weights into the saved model folders, which then load without
            the encoder checkpoints that `model.backbone` / `model.depth_backbone` name (e.g. local folders that may
            move).
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
    epochs: int = field(default=20, metadata=POSITIVE)
    max_steps: int | None = field(default=None, metadata=POSITIVE)
    per_device_batch_size: int = field(default=4, metadata=POSITIVE)
    gradient_accumulation_steps: int = field(default=1, metadata=POSITIVE)
    learning_rate: float = field(default=1e-4, metadata=NON_NEGATIVE)
    weight_decay: float = field(default=0.05, metadata=NON_NEGATIVE)
    betas: tuple[float, float] = (0.9, 0.999)
    poly_power: float = 0.9
    mixed_precision: str = field(default="no", metadata={"choices": ("no", "bf16", "fp16")})
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    normalization: Normalization | None = None
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    eval_every_epochs: int = field(default=1, metadata=POSITIVE)
    model_selection: str = "last"
    checkpointing_steps: int = field(default=500, metadata=POSITIVE)
    checkpoints_total_limit: int = field(default=2, metadata=POSITIVE)
    resume_from_checkpoint: str | None = None
    overwrite_output_dir: bool = False
    save_encoders: bool = False
    router_diagnostics_steps: int = field(default=50, metadata=NON_NEGATIVE)
    report_to: str = "tensorboard"
    push_to_hub: bool = False
    hub_model_id: str | None = None
    num_workers: int = field(default=0, metadata=NON_NEGATIVE)

    def __post_init__(self):
        check_known_keys(self.model, {f.name for f in dataclasses.fields(SpectralMoEConfig)}, "model.")
        if self.model_selection not in ("last", "source_validation") and not self.model_selection.startswith("oracle:"):
            raise ValueError(
                f"`model_selection` must be 'last', 'source_validation' or 'oracle:<split>', found "
                f"{self.model_selection!r}."
            )

    @property
    def oracle_split(self) -> str | None:
        return self.model_selection.split(":", 1)[1] if self.model_selection.startswith("oracle:") else None

    def check_dataset(self, metadata, splits: list[str]) -> None:
        """The settings that depend on the dataset: normalisation and augmentation bands against its band count, the
        selection split against its splits."""
        bands = len(metadata.band_names)
        if self.normalization is not None and len(self.normalization.mean) != bands:
            raise ValueError(
                f"`normalization` has {len(self.normalization.mean)} values per statistic, but the dataset has "
                f"{bands} bands {metadata.band_names}."
            )
        rgb = self.augmentation.rgb_bands
        if rgb is not None and (len(rgb) != 3 or not all(0 <= index < bands for index in rgb)):
            raise ValueError(f"`augmentation.rgb_bands` must be 3 band indices below {bands}, found {rgb}.")
        evaluated = [split for split in splits if split != metadata.source_split]
        if self.model_selection == "source_validation" and VALIDATION not in evaluated:
            raise ValueError(f"`model_selection: source_validation` needs a '{VALIDATION}' split; the dataset has "
                             f"{splits}.")
        if self.oracle_split is not None and self.oracle_split not in evaluated:
            raise ValueError(f"`model_selection` names split {self.oracle_split!r}, which is not evaluated"
                             f"{did_you_mean(self.oracle_split, evaluated)}; evaluated splits: {evaluated}.")


def did_you_mean(name: str, candidates) -> str:
    """`"; did you mean 'x'?"` for the closest candidate, or `""`."""
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_known_keys(values: dict, known: set[str], prefix: str = "") -> None:
    """Refuses the first key of `values` that is not in `known`, naming it with its dotted path."""
    for key in values:
        if key not in known:
            raise ValueError(f"Unknown setting `{prefix}{key}`{did_you_mean(key, known) or '.'} Known: "
                             f"{', '.join(sorted(known))}.")


def settings_from_dict(cls, values, prefix: str = ""):
    """An instance of the settings dataclass `cls` from plain values (YAML, command line): unknown keys, values of the
    wrong type, below a field's `minimum` or outside its `choices` are refused with the setting's dotted name."""
    if not isinstance(values, dict):
        raise ValueError(f"`{prefix.rstrip('.')}` must be a mapping of settings, found {values!r}.")
    known = {item.name: item for item in dataclasses.fields(cls) if item.init}
    check_known_keys(values, set(known), prefix)
    required = [name for name, item in known.items()
                if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING]
    for name in required:
        if name not in values:
            raise ValueError(f"`{prefix}{name}` is required.")
    hints = typing.get_type_hints(cls)
    checked = {}
    for name, value in values.items():
        checked[name] = _typed(value, hints[name], prefix + name)
        _check_bounds(checked[name], known[name].metadata, prefix + name)
    return cls(**checked)


def _typed(value, annotation, name: str):
    """`value` checked against (and converted to) `annotation`: a scalar type, `X | None`, `list[X]`, a fixed-length
    `tuple`, `dict`, `Any` or a settings dataclass."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        (inner,) = [argument for argument in arguments if argument is not type(None)]
        return _typed(value, inner, name)
    if dataclasses.is_dataclass(annotation):
        return settings_from_dict(annotation, value, f"{name}.")
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        item_types = arguments if origin is tuple else arguments * len(value)
        if len(item_types) != len(value):
            raise ValueError(f"`{name}` must have {len(item_types)} values, found {value!r}.")
        return origin(_typed(item, item_type, f"{name}[{index}]")
                      for index, (item, item_type) in enumerate(zip(value, item_types)))
    if origin is dict and isinstance(value, dict):
        return value
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, str, bool) and isinstance(value, annotation) and not (
            annotation is int and isinstance(value, bool)):
        return value
    expected = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    raise ValueError(f"`{name}` must be of type {expected}, found {value!r}.")


def _check_bounds(value, metadata, name: str) -> None:
    if value is None:
        return
    if "minimum" in metadata and value < metadata["minimum"]:
        raise ValueError(f"`{name}` must be at least {metadata['minimum']}, found {value!r}.")
    choices = metadata.get("choices")
    if choices is not None and value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(map(repr, choices))}, found {value!r}"
                         f"{did_you_mean(value, choices) or '.'}")


def _read_preset(path: Path) -> dict:
    """Reads a YAML preset; `inherit: other.yaml` (relative to it), or a list of such files merged in order (e.g. a
    benchmark, then a backbone), is read first and deep-merged under it."""
    with open(path) as handle:
        values = yaml.safe_load(handle) or {}
    parents = values.pop("inherit", None) or []
    inherited: dict = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        inherited = deep_merge(inherited, _read_preset(path.parent / parent))
    return deep_merge(inherited, values)


def preset_path(name_or_path: str) -> Path:
    """A preset file: a path to a YAML file, or the name of one of the package's presets (`demo`, `flair`, ...)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = PRESETS_DIR / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.parent == Path(".") and packaged.is_file():
        return packaged
    names = sorted(preset.stem for preset in PRESETS_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"No preset {name_or_path!r}: not a file, nor a packaged preset"
                            f"{did_you_mean(path.stem, names) or '.'} Packaged presets: {', '.join(names)}.")


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
    """The preset's values (a file or a packaged preset's name), overridden by `--key value` pairs, as a validated
    `RunConfig`."""
    values = _read_preset(preset_path(preset)) if preset else {}
    return settings_from_dict(RunConfig, deep_merge(values, parse_overrides(list(overrides))))
