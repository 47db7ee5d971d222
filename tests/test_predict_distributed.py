"""Scale-out of scene prediction: `torchrun` ranks and Ray actors write exactly the files of a single process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modeling_spectralmoe.inference.predict import PredictConfig, predict_scenes

from .conftest import optional_import
from .test_predict import model_folder, random_bands, write_scene  # noqa: F401 (fixture)


SETTINGS = dict(window=64, stride=48, outputs=("classes", "confidence", "experts"), progress=False)
CLI_SETTINGS = ["--window", "64", "--stride", "48", "--outputs", "classes,confidence,experts", "--quiet"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distributed_scenes")
    for index in range(4):
        write_scene(folder / f"scene{index}.tif", random_bands(3, 70 + 8 * index, 90, seed=index), nodata=0,
                    names=["B04", "B03", "B02"])
    return folder


@pytest.fixture(scope="module")
def single_process(model_folder, scenes, tmp_path_factory):  # noqa: F811
    output = tmp_path_factory.mktemp("single")
    predict_scenes(model_folder, None, [scenes], output, config=PredictConfig(**SETTINGS))
    return output


def assert_same_outputs(expected: Path, found: Path) -> None:
    """Rasters byte for byte; sidecars except their timing and device."""
    names = sorted(path.name for path in expected.iterdir())
    assert sorted(path.name for path in found.iterdir()) == names and len(names) == 16
    for name in names:
        if name.endswith(".tif"):
            assert (expected / name).read_bytes() == (found / name).read_bytes(), name
        else:
            a, b = ({key: value for key, value in json.loads((folder / name).read_text()).items()
                     if key not in ("seconds", "device")} for folder in (expected, found))
            assert a == b, name


def test_torchrun_ranks_split_scenes_with_identical_outputs(model_folder, scenes, single_process,  # noqa: F811
                                                           tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m",
               "modeling_spectralmoe.inference.predict", model_folder, str(scenes), "--output", str(tmp_path),
               *CLI_SETTINGS]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    inputs = sorted(json.loads(line)["input_path"] for line in completed.stdout.splitlines() if line.startswith("{"))
    assert inputs == sorted(str(path) for path in scenes.iterdir())
    assert_same_outputs(single_process, tmp_path)


def test_ray_actors_give_identical_outputs(model_folder, scenes, single_process, tmp_path):  # noqa: F811
    ray = optional_import("ray")

    from modeling_spectralmoe.inference.ray_predict import predict_with_ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}})
    try:
        records = predict_with_ray(model_folder, [scenes], tmp_path, actors=2, **SETTINGS)
    finally:
        ray.shutdown()
    assert sorted(record["path"] for record in records) == sorted(str(path) for path in scenes.iterdir())
    assert_same_outputs(single_process, tmp_path)
