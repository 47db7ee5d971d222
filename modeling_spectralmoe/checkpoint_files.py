"""Safe reading of released checkpoint files (research code often ships pickles)."""

import json
import os
import pickle
import zipfile

import torch
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file

from .encoder_key_maps import ORIGINAL_CHECKPOINT_CONVERTERS


def _is_torchscript_archive(path: str) -> bool:
    """TorchScript archives are zip files like `torch.save`'s, plus compiled code and a `constants.pkl`."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def read_state_dict_file(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a released `.pth` file (plain tensors only, never unpickled code) or a `.safetensors` file; the
    `{"model": ...}` / `{"state_dict": ...}` wrappers of training scripts are removed. TorchScript archives (OpenAI's
    CLIP files) are refused with the one-line re-save that turns them into plain tensors."""
    if path.endswith(".safetensors"):
        return load_file(path)
    if _is_torchscript_archive(path):
        raise ValueError(
            f"Refusing to load {path}: it is a TorchScript archive, and loading it deserialises the code it carries. "
            f"Re-save its tensors once, in a trusted environment: `torch.save(torch.jit.load(path, "
            f"map_location='cpu').state_dict(), new_path)`, and pass the new file."
        )
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


def original_state_dict(family: str, path: str) -> dict[str, torch.Tensor]:
    """Weights of a publisher's original encoder checkpoint (Meta DINOv2, OpenAI CLIP re-saved as tensors, Meta SAM),
    renamed to the keys of the family's transformers class (see `encoder_key_maps`).

    Args:
        family (`str`): the `model_type` of the encoder's config, one of `ORIGINAL_CHECKPOINT_CONVERTERS`
            (`"dinov2"`, `"clip_vision_model"`, `"sam_vision_model"`).
        path (`str`): a local `.pth` / `.pt` file of plain tensors or a `.safetensors` file.
    """
    if family not in ORIGINAL_CHECKPOINT_CONVERTERS:
        raise ValueError(
            f"No converter for original {family!r} checkpoints; "
            f"known families: {sorted(ORIGINAL_CHECKPOINT_CONVERTERS)}."
        )
    return ORIGINAL_CHECKPOINT_CONVERTERS[family](read_state_dict_file(path))
