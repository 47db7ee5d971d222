"""Safe reading of released checkpoint files (research code often ships pickles)."""

import pickle
import zipfile

import torch
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
    # Some training scripts wrap the weights as {"model": state_dict}.
    for wrapper in ("model", "state_dict"):
        if isinstance(checkpoint.get(wrapper), dict):
            return checkpoint[wrapper]
    return checkpoint


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
