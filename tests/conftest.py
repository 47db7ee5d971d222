"""Shared test helpers: reference tensors and real data from ../shared (tests skip when it is absent)."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GOLDEN = SHARED / "golden"
REAL_DATA = SHARED / "data" / "real"

torch.set_num_threads(2)


def golden_tensors(name: str) -> dict[str, torch.Tensor]:
    """The tensors of `../shared/golden/<name>.safetensors`, or a skip when the folder is absent."""
    path = GOLDEN / f"{name}.safetensors"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return load_file(path)


def real_data_dir(*parts: str) -> Path:
    """A folder of `../shared/data/real`, or a skip when it is absent."""
    path = REAL_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path
