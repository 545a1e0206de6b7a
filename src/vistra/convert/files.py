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
        elif path.suffix == ".pkl":  # detectron2 model zoo: numpy arrays in a pickle
            import pickle

            import numpy as np

            with open(path, "rb") as file:
                data = pickle.load(file, encoding="latin1")  # noqa: S301 - the user's own file
            data = data.get("model", data) if isinstance(data, dict) else data
            state = {k: torch.from_numpy(np.asarray(v)) for k, v in data.items()
                     if isinstance(v, np.ndarray)}  # fmt: skip
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


def load_checked(
    model: torch.nn.Module,
    state: dict[str, Tensor],
    origin: str | Path,
    may_be_missing=lambda key: False,
) -> torch.nn.Module:
    """``model.load_state_dict(state)`` that names every missing, unexpected or misshapen key.

    Args:
        origin: the file the state came from (for the message).
        may_be_missing: predicate for keys the checkpoint may lack (they keep their init).
    """
    expected = model.state_dict()
    missing = sorted(k for k in set(expected) - set(state) if not may_be_missing(k))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or wrong_shape:
        config = getattr(model, "config", "")
        raise ValueError(
            f"{origin}: checkpoint does not fit {type(model).__name__}({config})\n"
            f"  missing: {missing[:20]}{' ...' if len(missing) > 20 else ''}\n"
            f"  unexpected: {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}\n"
            f"  wrong shape: {wrong_shape[:20]}"
        )
    model.load_state_dict(state, strict=False)
    return model
