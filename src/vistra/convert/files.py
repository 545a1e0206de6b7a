"""Reading a state dict from .pth / .pt / .bin / .safetensors files."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

NESTED_KEYS = ("model", "state_dict", "module")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a checkpoint file, unwrapped from {"model": ...}-style containers."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any reader failure means a bad file
        raise ValueError(f"{path}: cannot read checkpoint ({error})") from error
    for key in NESTED_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: no state dict of tensors found")
    return state
