"""Every encoder family x adapter type loads through the Auto classes in a fresh process, as the README shows."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from modeling_spectralmoe import SpectralMoEForSemanticSegmentation
from modeling_spectralmoe.configuration_spectralmoe import ADAPTER_TYPES

from .conftest import (
    randomize_adapter,
    save_tiny_clip,
    save_tiny_depth_model,
    save_tiny_dinov2,
    save_tiny_dinov3,
    save_tiny_dofa,
    save_tiny_eva02,
    save_tiny_sam,
    tiny_config,
)


GF2_WAVELENGTHS = [0.83, 0.665, 0.56, 0.49]
FAMILIES = {
    "dinov3": (save_tiny_dinov3, {}),
    "dofa": (save_tiny_dofa, {"wavelengths": GF2_WAVELENGTHS}),
    "dinov2": (save_tiny_dinov2, {}),
    "clip": (save_tiny_clip, {}),
    "sam": (save_tiny_sam, {}),
    "eva02": (save_tiny_eva02, {}),
}
# Every adapter type on the first families; one on each of the others (time budget), a depth-fused token method or
# one acting inside the layers.
ADAPTERS_OF_FAMILY = {
    "dinov3": ADAPTER_TYPES, "dofa": ADAPTER_TYPES, "dinov2": ("lora",), "clip": ("depthforge",),
    "sam": ("spectralmoe",), "eva02": ("adaptformer",),
}
CASES = [(family, adapter_type) for family in FAMILIES for adapter_type in ADAPTERS_OF_FAMILY[family]]

# An interpreter that never imported the package forks one child per folder: each child loads its folder's remote
# code from scratch, as a new process does (one process loading several folders would hide bugs: the first load
# registers classes the next ones would reuse). Only transformers' own modules are imported before the fork, so a
# child costs a model load, not a Python start.
ZYGOTE_SCRIPT = """
import json, os, sys, traceback
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSemanticSegmentation
import transformers.models.dinov2.modeling_dinov2, transformers.models.dinov3_vit.modeling_dinov3_vit
import transformers.models.clip.modeling_clip, transformers.models.sam.modeling_sam
import transformers.models.mask2former.modeling_mask2former
import transformers.models.prompt_depth_anything.modeling_prompt_depth_anything
folders, inputs = json.loads(sys.argv[1]), load_file(sys.argv[2])
for folder in folders:
    pid = os.fork()
    if pid == 0:
        try:
            model = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True).eval()
            assert not any(name.startswith("modeling_spectralmoe") for name in sys.modules), "the package was imported"
            with torch.no_grad():
                logits = model(pixel_values=inputs["pixel_values"]).logits
            save_file({"logits": logits}, os.path.join(folder, "fresh.safetensors"))
        except BaseException:
            with open(os.path.join(folder, "fresh_error.txt"), "w") as handle:
                handle.write(traceback.format_exc())
        os._exit(0)
    os.waitpid(pid, 0)
"""


@pytest.fixture(scope="module")
def fresh_process_results(tmp_path_factory):
    """Saves one model per case and loads each in a fresh child process; returns, by case, the in-process logits and
    the folder where the child wrote its logits (or its error)."""
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
    env = {**os.environ, "HF_MODULES_CACHE": str(root / "modules"), "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(
        [sys.executable, "-c", ZYGOTE_SCRIPT, json.dumps([str(folder) for folder in folders.values()]), str(inputs)],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return {case: (expected[case], folders[case]) for case in CASES}


@pytest.mark.parametrize("family, adapter_type", CASES, ids=[f"{f}-{a}" for f, a in CASES])
def test_bad_input_01_every_family_and_adapter_loads_through_the_auto_classes_in_a_fresh_process(fresh_process_results, family, adapter_type):
    expected, folder = fresh_process_results[family, adapter_type]
    error = folder / "fresh_error.txt"
    assert not error.exists(), error.read_text()[-3000:]
    torch.testing.assert_close(load_file(folder / "fresh.safetensors")["logits"], expected, rtol=0, atol=1e-6)
