"""Safe reading of released checkpoint files (research code often ships pickles)."""

import json
import os
import pickle

import torch
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file


def read_state_dict_file(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a released `.pth` file (plain tensors only, never unpickled code) or a `.safetensors` file; the
    `{"model": ...}` / `{"state_dict": ...}` wrappers of training scripts are removed."""
    if path.endswith(".safetensors"):
        return load_file(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"Refusing to load {path}: it is not a plain tensor state dict and unpickling it would run arbitrary "
            f"code. Re-save it as a dict of tensors (or safetensors) from a trusted environment. ({error})"
        ) from error
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, expected a state dict.")
    # Some training scripts wrap the weights as {"model": state_dict} (DeepSpeed's as {"module": state_dict}).
    for wrapper in ("model", "state_dict", "module"):
        if isinstance(checkpoint.get(wrapper), dict):
            return checkpoint[wrapper]
    return checkpoint


def read_saved_folder(folder: str) -> dict[str, torch.Tensor]:
    """Tensors of a `save_pretrained` folder (single or sharded safetensors)."""
    single = os.path.join(folder, "model.safetensors")
    if os.path.isfile(single):
        return load_file(single)
    index = os.path.join(folder, "model.safetensors.index.json")
    if not os.path.isfile(index):
        raise FileNotFoundError(f"{folder} holds neither model.safetensors nor model.safetensors.index.json.")
    with open(index) as handle:
        shards = sorted(set(json.load(handle)["weight_map"].values()))
    return {key: value for shard in shards for key, value in load_file(os.path.join(folder, shard)).items()}


def checkpoint_file(name_or_path: str, default_filename: str | None = None) -> str:
    """Local path of a released checkpoint file: `name_or_path` itself when it is a local file, else a Hub file named
    `"owner/repo/filename"` (downloaded), or `"owner/repo"` when a `default_filename` of that repository is known."""
    if os.path.isfile(name_or_path):
        return name_or_path
    parts = name_or_path.split("/")
    if len(parts) == 2 and default_filename:
        parts.append(default_filename)
    if len(parts) < 3:
        raise ValueError(f"{name_or_path!r} is not a local folder or file, nor a Hub file named 'owner/repo/filename'.")
    return hf_hub_download(repo_id="/".join(parts[:2]), filename="/".join(parts[2:]))
