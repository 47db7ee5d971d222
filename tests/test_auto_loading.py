"""Every encoder family x adapter type loads through the Auto classes in a fresh process, as the README shows."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from modeling_spectralmoe import SpectralMoEForSemanticSegmentation
from modeling_spectralmoe.configuration_spectralmoe import ADAPTER_TYPES

from .conftest import randomize_adapter, save_tiny_depth_model, save_tiny_dinov3, save_tiny_dofa, tiny_config


GF2_WAVELENGTHS = [0.83, 0.665, 0.56, 0.49]
FAMILIES = {
    "dinov3": (save_tiny_dinov3, {}),
    "dofa": (save_tiny_dofa, {"wavelengths": GF2_WAVELENGTHS}),
}
CASES = [(family, adapter_type) for family in FAMILIES for adapter_type in ADAPTER_TYPES]

# One new interpreter per folder, which never imported the package: everything comes from the folder's remote code.
# (One process for several folders would hide bugs: the first load registers classes the next ones would reuse.)
FRESH_PROCESS_SCRIPT = """
import sys, torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSemanticSegmentation
folder, inputs, output = sys.argv[1:]
model = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True).eval()
assert not any(name.startswith("modeling_spectralmoe") for name in sys.modules), "the package was imported"
with torch.no_grad():
    save_file({"logits": model(pixel_values=load_file(inputs)["pixel_values"]).logits}, output)
"""


def load_in_fresh_process(folder: Path, inputs: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_MODULES_CACHE": str(folder / "modules"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_SCRIPT, str(folder), str(inputs), str(folder / "fresh.safetensors")],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600,
    )


@pytest.fixture(scope="module")
def fresh_process_results(tmp_path_factory):
    """Saves one model per case and loads each in its own fresh process (one per core at a time); returns, by case, the
    in-process logits and the finished fresh process."""
    root = tmp_path_factory.mktemp("auto_loading")
    depth = save_tiny_depth_model(root / "depth")
    visual = {family: save(root / family) for family, (save, _) in FAMILIES.items()}
    inputs = root / "inputs.safetensors"
    pixel_values = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    save_file({"pixel_values": pixel_values}, inputs)
    folders, expected = {}, {}
    for family, adapter_type in CASES:
        config = tiny_config(visual[family], depth, adapter_type=adapter_type, num_channels=4,
                             depth_rgb_bands=[1, 2, 3], **FAMILIES[family][1])
        torch.manual_seed(0)
        model = SpectralMoEForSemanticSegmentation(config)
        model.load_pretrained_encoders()
        randomize_adapter(model)
        folders[family, adapter_type] = root / f"{family}-{adapter_type}"
        model.save_pretrained(folders[family, adapter_type])
        with torch.no_grad():
            expected[family, adapter_type] = model.eval()(pixel_values=pixel_values).logits
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        processes = dict(zip(folders, pool.map(lambda folder: load_in_fresh_process(folder, inputs), folders.values())))
    return {case: (expected[case], processes[case]) for case in CASES}


@pytest.mark.parametrize("family, adapter_type", CASES, ids=[f"{f}-{a}" for f, a in CASES])
def test_fresh_process_auto_loading_predicts_as_the_package(fresh_process_results, family, adapter_type):
    expected, process = fresh_process_results[family, adapter_type]
    assert process.returncode == 0, process.stderr[-3000:]
    folder = Path(process.args[3])
    torch.testing.assert_close(load_file(folder / "fresh.safetensors")["logits"], expected, rtol=0, atol=1e-6)
