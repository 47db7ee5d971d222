"""Safe reading of released checkpoint files (research code often ships pickles)."""

import pickle

import torch
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
    # Some training scripts wrap the weights as {"model": state_dict}.
    for wrapper in ("model", "state_dict"):
        if isinstance(checkpoint.get(wrapper), dict):
            return checkpoint[wrapper]
    return checkpoint
