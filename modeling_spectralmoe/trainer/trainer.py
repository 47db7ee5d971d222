"""The training loop of SpectralMoE (arXiv 2603.13352) on accelerate: source-only training, per-epoch evaluation on
every target domain, resumable checkpoints, router diagnostics, model selection without peeking, and the final model
folder."""

import errno
import fcntl
import json
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass, fields, replace
from functools import cached_property
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import (
    DataLoaderConfiguration, DistributedDataParallelKwargs, ProjectConfiguration, extract_model_from_parallel, set_seed,
)
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..configuration_spectralmoe import SpectralMoEConfig
from ..data.augmentation import resolve_value_range
from ..data.loading import ProcessorCollator, SegmentationSplit
from ..data.schema import load_spectral_dataset
from ..image_processing_spectralmoe import SpectralMoEImageProcessor
from ..modeling_spectralmoe import SpectralMoEForSemanticSegmentation
from ..evaluation.protocol import VALIDATION, evaluate_dataset, format_table, results_json, source_label_counts
from .model_card import model_card
from .optimization import build_optimizer, poly_schedule
from .plots import DOMAIN_CHART, PREDICTIONS, save_domain_chart, save_prediction_grid
from .router_diagnostics import router_statistics, save_expert_maps
from .run_config import RunConfig


logger = logging.getLogger(__name__)


@dataclass
class TrainingProgress:
    """Where training stands; saved in every checkpoint so a resumed run continues at the same batch."""

    global_step: int = 0
    epoch: int = 0
    batches_done_in_epoch: int = 0
    best_score: float = float("-inf")

    def state_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, value)


def build_model_config(run: RunConfig, metadata) -> SpectralMoEConfig:
    """The model config: the preset's architecture, with bands, wavelengths and labels from the dataset's metadata
    (the config then finds the depth encoder's R, G, B bands by name or wavelength)."""
    values = dict(run.model)
    values.setdefault("num_channels", len(metadata.band_names))
    values.setdefault("band_names", list(metadata.band_names))
    if metadata.wavelengths is not None:
        values.setdefault("wavelengths", list(metadata.wavelengths))
    values.setdefault("id2label", {int(k): v for k, v in metadata.id2label.items()})
    return SpectralMoEConfig(**values)


def build_processor(run: RunConfig, metadata, input_dtype: str | None = None) -> SpectralMoEImageProcessor:
    """The one source of normalisation: the preset's pinned statistics, else the dataset's source statistics;
    `input_dtype` is the dataset's pixel type."""
    statistics = run.normalization or metadata
    return SpectralMoEImageProcessor(
        image_mean=list(statistics.mean), image_std=list(statistics.std), nodata_value=metadata.nodata,
        band_names=list(metadata.band_names), wavelengths=metadata.wavelengths, input_dtype=input_dtype,
    )


class Trainer:
    """Runs one training as configured by a `RunConfig`; `train()` returns the final results."""

    def __init__(self, run: RunConfig):
        self.run = run
        self.output_dir = Path(run.output_dir)
        self.accelerator = Accelerator(
            gradient_accumulation_steps=run.gradient_accumulation_steps,
            mixed_precision=run.mixed_precision,
            log_with=None if run.report_to == "none" else run.report_to,
            project_config=ProjectConfiguration(project_dir=str(self.output_dir)),
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
            # The poly schedule counts optimizer steps of this process's sharded loader; accelerate would otherwise
            # step it once per process at every optimizer step.
            step_scheduler_with_optimizer=False,
            # accelerate runs several CPU processes (torchrun on a machine without GPU) as one job only when told so.
            cpu=torch.distributed.is_torchelastic_launched() and not torch.cuda.is_available(),
            # Routers without noise get no gradient from a hard-count load; DDP must not wait for theirs.
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        set_seed(run.seed)
        self.dataset, self.metadata = load_spectral_dataset(run.dataset)
        run.check_dataset(self.metadata, list(self.dataset))
        self.model_config = build_model_config(run, self.metadata)
        self.processor = build_processor(
            run, self.metadata, self.dataset[self.metadata.source_split].features["pixel_values"].dtype)
        self.model = SpectralMoEForSemanticSegmentation(self.model_config)
        self.random_encoders = not self.model.has_named_encoders()
        if not self.random_encoders:
            self.model.load_pretrained_encoders()
        self.target_splits = [s for s in self.dataset if s not in (self.metadata.source_split, VALIDATION)]
        self.progress = TrainingProgress()

    # ---- setup -------------------------------------------------------------------------------------------------

    def _train_loader(self) -> DataLoader:
        source = self.dataset[self.metadata.source_split]
        if len(source) == 0:
            raise ValueError(f"The source split {self.metadata.source_split!r} of {self.run.dataset} is empty.")
        augmentation = self.run.augmentation
        if augmentation.rgb_bands is None:
            augmentation = replace(augmentation, rgb_bands=self.metadata.rgb_band_indices())
        augmentation = resolve_value_range(augmentation, source.features["pixel_values"].dtype,
                                           self.processor.image_mean, self.processor.image_std)
        self.train_split = SegmentationSplit(source, augmentation, self.run.seed, self.processor.nodata_value)
        # The last partial batch is dropped (batches of equal size), unless the split holds less than one batch per
        # process: then that one smaller batch is the epoch (dropping it would leave epochs of 0 steps).
        global_batch = self.run.per_device_batch_size * self.accelerator.num_processes
        # Every new iterator draws its workers' base seed from the loader's generator; left to the global RNG, the extra
        # iterator that a run resumed mid-epoch creates would shift the router noise and point sampling of every later
        # step. (The seedable sampler reseeds this generator with seed + epoch before drawing each epoch's order.)
        return DataLoader(
            self.train_split, batch_size=self.run.per_device_batch_size, shuffle=True,
            drop_last=len(source) >= global_batch,
            collate_fn=ProcessorCollator(self.processor), num_workers=self.run.num_workers,
            generator=torch.Generator().manual_seed(self.run.seed),
        )

    def _total_steps(self, loader: DataLoader) -> int:
        steps_per_epoch = math.ceil(len(loader) / self.run.gradient_accumulation_steps)
        return self.run.max_steps or self.run.epochs * steps_per_epoch

    # ---- training ----------------------------------------------------------------------------------------------

    def train(self) -> dict:
        self._lock_output_dir()
        try:
            return self._train()
        finally:
            self._unlock_output_dir()

    def _train(self) -> dict:
        accelerator, run = self.accelerator, self.run
        optimizer = build_optimizer(self.model, run.learning_rate, run.weight_decay, run.betas)
        self.model, optimizer, loader = accelerator.prepare(self.model, optimizer, self._train_loader())
        total_steps = self._total_steps(loader)  # after sharding: the steps each process really takes
        scheduler = accelerator.prepare(poly_schedule(optimizer, total_steps, run.poly_power))
        accelerator.register_for_checkpointing(self.progress)
        if not self.random_encoders:
            accelerator.register_save_state_pre_hook(_drop_frozen_weights)
        if run.resume_from_checkpoint:
            self._resume()
            if self.progress.global_step >= total_steps and (self.output_dir / "all_results.json").is_file():
                accelerator.print(f"The run in {self.output_dir} finished at step {self.progress.global_step} of "
                                  f"{total_steps}; its final model and results are kept as they are.")
                accelerator.end_training()
                return json.loads((self.output_dir / "all_results.json").read_text())
        else:
            self._claim_output_dir()
        accelerator.init_trackers("spectralmoe", config={"seed": run.seed, "lr": run.learning_rate})
        self._announce(total_steps)
        results = {}
        bar = tqdm(total=total_steps, initial=self.progress.global_step, desc="train",
                   disable=not accelerator.is_local_main_process)
        while self.progress.global_step < total_steps:
            self._train_epoch(loader, optimizer, scheduler, total_steps, bar)
            if self.progress.global_step >= total_steps or self.progress.epoch % run.eval_every_epochs == 0:
                results = self._evaluate_and_select()
        bar.close()
        return self._finish(results)

    def _train_epoch(self, loader, optimizer, scheduler, total_steps: int, bar) -> None:
        accelerator, progress = self.accelerator, self.progress
        self.train_split.set_epoch(progress.epoch)
        loader.set_epoch(progress.epoch)
        batches = loader
        if progress.batches_done_in_epoch:  # resumed mid-epoch: skip what the interrupted run consumed
            batches = accelerator.skip_first_batches(loader, progress.batches_done_in_epoch)
        self.model.train()
        for batch in batches:
            with accelerator.accumulate(self.model):
                diagnose = self._diagnostics_due()
                outputs = self.model(**batch, output_router_probs=diagnose)
                accelerator.backward(outputs.loss)
                optimizer.step()
                optimizer.zero_grad()
            progress.batches_done_in_epoch += 1
            if accelerator.sync_gradients:
                scheduler.step()
                progress.global_step += 1
                bar.update(1)
                self._log_step(outputs, scheduler, diagnose)
                if progress.global_step % self.run.checkpointing_steps == 0:
                    self._save_checkpoint()
            if progress.global_step >= total_steps:
                break
        progress.epoch += 1
        progress.batches_done_in_epoch = 0
        self._save_checkpoint()

    def _save_checkpoint(self) -> None:
        """`checkpoints/checkpoint_<step>` (an epoch end at the step of a step checkpoint replaces it), written under
        a hidden name and renamed when complete, so a resume never picks up half a checkpoint; then the oldest beyond
        `checkpoints_total_limit` are deleted."""
        accelerator = self.accelerator
        folder = self.output_dir / "checkpoints" / f"checkpoint_{self.progress.global_step}"
        partial = folder.with_name(f".{folder.name}.partial")
        try:
            accelerator.save_state(str(partial))
        except (OSError, RuntimeError) as error:
            if accelerator.is_main_process:
                shutil.rmtree(partial, ignore_errors=True)
            if _is_disk_full(error):
                raise OSError(errno.ENOSPC, f"No space left on device while saving the checkpoint {folder}; free space "
                              "(or choose another --output_dir), then continue with --resume_from_checkpoint "
                              "latest") from error
            raise
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(partial, folder)
            for old in self._checkpoints_newest_first()[self.run.checkpoints_total_limit:]:
                shutil.rmtree(old)
        accelerator.wait_for_everyone()

    def _lock_output_dir(self) -> None:
        """One run per `output_dir`: a second one would rotate, overwrite or resume the first one's checkpoints."""
        if not self.accelerator.is_main_process:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.output_dir / ".run.lock", "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            holder = self._lock.read().strip() or "another process"
            self._lock.close()
            raise FileExistsError(f"{self.output_dir} is in use by another training run ({holder}); wait for it to "
                                  "end or choose another --output_dir.") from None
        self._lock.truncate(0)
        self._lock.write(f"process {os.getpid()} on {os.uname().nodename}")
        self._lock.flush()

    def _unlock_output_dir(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None and not lock.closed:
            lock.close()  # closing releases the flock

    def _diagnostics_due(self) -> bool:
        every = self.run.router_diagnostics_steps
        return bool(every) and (self.progress.global_step + 1) % every == 0

    def _log_step(self, outputs, scheduler, diagnose: bool) -> None:
        values = {"train/loss": outputs.loss.item(), "train/aux_loss": outputs.aux_loss.item(),
                  "train/lr": scheduler.get_last_lr()[0]}
        if diagnose:
            scalars, warnings = router_statistics(
                {"visual": outputs.visual_router_probs, "depth": outputs.depth_router_probs}
            )
            values.update(scalars)
            for warning in warnings:
                logger.warning(warning)
        self.accelerator.log(values, step=self.progress.global_step)

    def _claim_output_dir(self) -> None:
        """A new run must not rotate away another run's checkpoints unnoticed."""
        checkpoints = self.output_dir / "checkpoints"
        if not any(checkpoints.glob("checkpoint_*")):
            return
        if not self.run.overwrite_output_dir:
            raise FileExistsError(
                f"{checkpoints} holds checkpoints of an earlier run. Continue it with --resume_from_checkpoint latest, "
                "choose another --output_dir, or pass --overwrite_output_dir true to delete them."
            )
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            shutil.rmtree(checkpoints)
        self.accelerator.wait_for_everyone()

    def _resume(self) -> None:
        path = self.run.resume_from_checkpoint
        candidates = self._checkpoints_newest_first() if path == "latest" else [Path(path)]
        if not candidates:
            raise FileNotFoundError(
                f"No checkpoint under {self.output_dir / 'checkpoints'} to resume from; drop --resume_from_checkpoint "
                "to start a new run there."
            )
        self._load_first_readable(candidates)
        self.accelerator.print(f"Resumed at step {self.progress.global_step}, epoch {self.progress.epoch}.")

    def _checkpoints_newest_first(self) -> list[Path]:
        folders = [folder for folder in (self.output_dir / "checkpoints").glob("checkpoint_*")
                   if re.fullmatch(r"checkpoint_\d+", folder.name)]
        return sorted(folders, key=lambda folder: int(folder.name.split("_")[1]), reverse=True)

    def _load_first_readable(self, candidates: list[Path]) -> None:
        """Loads the newest checkpoint that reads back whole: one cut short by a kill during its save is skipped
        with a warning (every state part is loaded again from the next candidate)."""
        failures = []
        for folder in candidates:
            try:
                # Checkpoints of named encoders hold only the trained weights; the frozen ones are already loaded.
                self.accelerator.load_state(str(folder), strict=self.random_encoders)
                break
            except Exception as error:  # noqa: BLE001 - any unreadable part disqualifies the checkpoint
                failures.append(f"{folder}: {type(error).__name__}: {error}")
                logger.warning("Checkpoint %s cannot be read back (%s); trying an older one.", folder, error)
        else:
            raise RuntimeError("No checkpoint could be resumed from:\n" + "\n".join(failures))

    def _announce(self, total_steps: int) -> None:
        model = self.accelerator.unwrap_model(self.model)
        self.accelerator.print(
            f"Training SpectralMoE: {model.num_parameters(only_trainable=True) / 1e6:.2f} M trainable parameters "
            f"(adapter {sum(p.numel() for p in model.adapter.parameters()) / 1e6:.2f} M), {total_steps} steps, "
            f"source split '{self.metadata.source_split}', targets {self.target_splits}."
        )
        if not self.target_splits:
            self.accelerator.print("No target domains: the dataset has only a source split, so the final model is "
                                   "saved without target-domain results.")
        if self.random_encoders:
            self.accelerator.print("NOTE: the frozen encoders are tiny and randomly initialised (no pretrained "
                                   "weights); the numbers below say nothing about SpectralMoE's accuracy.")

    # ---- evaluation and selection ------------------------------------------------------------------------------

    def evaluate(self) -> dict:
        """Metrics of every evaluated split, summed over processes, with the majority-class baseline."""
        return evaluate_dataset(
            self.accelerator.unwrap_model(self.model), self.processor, self.dataset, self.metadata.source_split,
            self.run.evaluation, self.accelerator.process_index, self.accelerator.num_processes,
            self.source_counts, metadata=self.metadata,
        )

    @cached_property
    def source_counts(self):
        """Pixels per class in the source split (for the majority-class baseline), counted at the first evaluation."""
        return source_label_counts(self.dataset[self.metadata.source_split], self.model_config.num_labels)

    def _evaluate_and_select(self) -> dict:
        results = self.evaluate()
        self.accelerator.print(format_table(results, f"epoch {self.progress.epoch}"))
        self.accelerator.log({f"eval/{split}/mIoU": m["mean_iou"] for split, m in results.items()},
                             step=self.progress.global_step)
        selection_split = VALIDATION if self.run.model_selection == "source_validation" else self.run.oracle_split
        if selection_split is not None and selection_split in results:
            score = results[selection_split]["mean_iou"]
            if score > self.progress.best_score:
                self.progress.best_score = score
                self._save_model(self.output_dir / "best_model", results)
        self._save_expert_maps()
        return results

    def _save_expert_maps(self) -> None:
        split = VALIDATION if VALIDATION in self.dataset else self.metadata.source_split
        if not self.accelerator.is_main_process or len(self.dataset[split]) == 0:
            return
        model = self.accelerator.unwrap_model(self.model)
        batch = ProcessorCollator(self.processor)([SegmentationSplit(self.dataset[split])[0]])
        with torch.no_grad():
            outputs = model(pixel_values=batch["pixel_values"], output_router_probs=True)
        if outputs.visual_router_probs is None:  # baselines route nothing
            return
        patch = model.visual_encoder.patch_size
        grid = (batch["pixel_values"].shape[-2] // patch, batch["pixel_values"].shape[-1] // patch)
        save_expert_maps(outputs.visual_router_probs, grid, self.output_dir / "expert_maps.png")

    # ---- outputs -----------------------------------------------------------------------------------------------

    def _save_model(self, directory: Path, results: dict) -> None:
        if not self.accelerator.is_main_process:
            return
        model = self.accelerator.unwrap_model(self.model)
        model.save_pretrained(directory, save_encoders=self.run.save_encoders)
        self.processor.save_pretrained(directory)
        figures = self._save_figures(model, directory, results)
        dataset = self.run.dataset if not Path(self.run.dataset).exists() else self.metadata.name
        (directory / "README.md").write_text(model_card(
            model.config, results, dataset, self.run.hub_model_id or directory.name,
            self.run.model_selection, self.random_encoders, figures=figures, processor=self.processor,
        ))
        (directory / "all_results.json").write_text(results_json(results))

    def _save_figures(self, model, directory: Path, results: dict) -> dict[str, str]:
        """Per-domain chart and one prediction per evaluated split, beside the model; `{caption: file}`."""
        splits = [split for split in (VALIDATION, *self.target_splits) if split in self.dataset]
        figures = {}
        if results:
            save_domain_chart(results, directory / DOMAIN_CHART)
            figures["mIoU per domain and the majority-class baseline"] = DOMAIN_CHART
        # Without evaluated splits, the source split's first image shows what the model learnt.
        shown = splits or [self.metadata.source_split]
        save_prediction_grid(model.eval(), self.processor, self.dataset, shown, self.metadata,
                             self.model_config.id2label, directory / PREDICTIONS)
        figures["First image of each evaluated split: bands, label, prediction"] = PREDICTIONS
        return figures

    def _finish(self, last_results: dict) -> dict:
        """Writes the selected model to `output_dir/final_model` and returns its results."""
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        final = self.output_dir / "final_model"
        best = self.output_dir / "best_model"
        if self.run.model_selection != "last" and best.exists():
            results = json.loads((best / "all_results.json").read_text())
            if accelerator.is_main_process:
                shutil.copytree(best, final, dirs_exist_ok=True)
        else:
            results = last_results
            self._save_model(final, results)
        if self.run.model_selection == "last":
            accelerator.print(f"Final model (the last checkpoint, evaluated above): {final}")
        else:
            label = " (oracle selection)" if self.run.oracle_split else ""
            accelerator.print(format_table(results, f"Final model{label}: {final}"))
        if accelerator.is_main_process:
            (self.output_dir / "all_results.json").write_text(results_json(results))
            if self.run.push_to_hub:
                push_to_hub(final, self.run.hub_model_id)
        accelerator.end_training()
        return results


def _is_disk_full(error: BaseException) -> bool:
    """torch reports a full disk as a failed write of its zip writer, without errno."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    text = str(error)
    return "No space left on device" in text or "inline_container" in text or "file write failed" in text


def _drop_frozen_weights(models, weights, output_dir) -> None:
    """accelerate save-state hook: keep only what training changes (at ViT-L scale 105 MB instead of 1.3 GB), as
    `save_pretrained` does (parameters an adapter injected into an encoder included); the frozen encoders are
    reloaded from the checkpoints the config names."""
    for index, (model, state_dict) in enumerate(zip(models, weights)):
        trained = set(extract_model_from_parallel(model).trained_state_dict())
        weights[index] = {
            name: tensor for name, tensor in state_dict.items() if name.removeprefix("module.") in trained
        }


def push_to_hub(folder: Path, repo_id: str | None) -> None:
    """Uploads the model folder (weights, config, processor, remote code, model card, figures, STAC MLM item) with
    huggingface_hub."""
    if not repo_id:
        raise ValueError("`push_to_hub` needs `hub_model_id`.")
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="Upload SpectralMoE model")
