"""Scene prediction on a Ray cluster (`pip install 'spectralmoe[ray]'`): Ray Data maps a callable predictor class over
the scene paths, so each actor loads the model once and predicts whole scenes (GDAL cannot share one output file
between writers); Ray schedules the actors on the cluster's GPUs or CPUs and retries failed tasks.

    spectralmoe-predict MODEL INPUT... --output DIR --ray-actors 8 --ray-gpus-per-actor 1

Outputs are those of a single process, byte for byte (only the sidecars' timings differ).
"""

from dataclasses import asdict

from .predict import PredictConfig, expand_inputs, load_model, predict_raster


class SpectralMoEPredictor:
    """A Ray Data actor: loads the model once, then predicts the scenes of each batch (`{"path": [...]}`) and returns
    one row per scene (paths, window counts, seconds).

    Args:
        model (`str`): saved model folder or Hub id.
        output_dir (`str`): where the outputs go.
        config (`dict`): `PredictConfig` fields.
    """

    def __init__(self, model: str, output_dir: str, config: dict):
        self.config = PredictConfig(**{**config, "progress": False})
        self.model, self.processor = load_model(model, device=self.config.device)
        self.output_dir = output_dir

    def __call__(self, batch: dict) -> dict:
        results = [predict_raster(self.model, self.processor, str(path), self.output_dir, self.config)
                   for path in batch["path"]]
        return {
            "path": [result.input_path for result in results],
            "sidecar": [result.paths["sidecar"] for result in results],
            "windows": [result.windows for result in results],
            "skipped_windows": [result.skipped_windows for result in results],
            "seconds": [result.seconds for result in results],
            "resumed": [result.resumed for result in results],
        }


def predict_with_ray(model: str, inputs, output_dir: str, actors: int = 1, gpus_per_actor: float = 0,
                     config: PredictConfig | None = None, **settings) -> list[dict]:
    """Predicts every scene of `inputs` with `actors` Ray actors (joining a running cluster, or starting a local one);
    returns one record per scene."""
    import ray

    config = config or PredictConfig(**settings)
    scenes = expand_inputs(inputs)
    if not ray.is_initialized():
        ray.init(log_to_driver=False)
    dataset = ray.data.from_items([{"path": path} for path in scenes], override_num_blocks=len(scenes))
    predictions = dataset.map_batches(
        SpectralMoEPredictor, fn_constructor_kwargs={"model": str(model), "output_dir": str(output_dir),
                                                     "config": asdict(config)},
        batch_size=1, concurrency=actors, num_gpus=gpus_per_actor or None,
    )
    return predictions.take_all()


__all__ = ["SpectralMoEPredictor", "predict_with_ray"]
