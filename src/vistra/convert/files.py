"""Reading a state dict from .pth / .pt / .bin / .safetensors files."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import Tensor

from vistra.convert.safe import UnsafeFileError, load_pickle_file, load_torch_file

NESTED_KEYS = ("model", "state_dict", "module")
# Where a vistra checkpoint records its network ({"class_path", "init_args"}).
NETWORK_KEY = "vistra_network"


class CheckpointMismatchError(ValueError):
    """A weight file that does not fit the model it is loaded into; the message names the file
    and what differs (another family's network, or the keys and shapes)."""


def read_state_dict(path: str | Path, unsafe: bool | None = None) -> dict[str, Tensor]:
    """The tensors of a checkpoint file, unwrapped from {"model": ...}-style containers.

    Read as data only (``vistra.convert.safe``): a file that would run code is refused with
    an ``UnsafeFileError`` unless ``unsafe`` (or ``VISTRA_UNSAFE_LOAD=1``) says it is trusted.
    """
    return unwrap_state_dict(read_weight_file(path, unsafe), path)


def read_weight_file(path: str | Path, unsafe: bool | None = None):
    """What a ``.pth`` / ``.pt`` / ``.ckpt`` / ``.bin`` / ``.safetensors`` / ``.pkl`` file
    holds, as data (tensors in plain containers), before any unwrapping. A Hugging Face model
    id or ``save_pretrained`` folder stands for its weight file (``vistra.convert.hub``)."""
    from vistra.convert.hub import weight_file

    path = weight_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if path.suffix == ".pkl":  # detectron2 model zoo: numpy arrays in a pickle
            import numpy as np

            data = load_pickle_file(path, unsafe)
            data = data.get("model", data) if isinstance(data, dict) else data
            return {k: torch.from_numpy(np.asarray(v)) for k, v in data.items()
                    if isinstance(v, np.ndarray)}  # fmt: skip
        return load_torch_file(path, unsafe)
    except UnsafeFileError:
        raise
    except Exception as error:  # noqa: BLE001 - any reader failure means a bad file
        raise ValueError(f"{path}: cannot read checkpoint ({error})") from error


def unwrap_state_dict(state, path: str | Path) -> dict[str, Tensor]:
    """The state dict inside a file's data (``{"model": ...}``, ``{"state_dict": ...}``)."""
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
    # BatchNorm's step counters carry no weights (frozen-BatchNorm files have none).
    counter = lambda key: key.endswith("num_batches_tracked")  # noqa: E731
    missing = sorted(k for k in set(expected) - set(state) if not (may_be_missing(k) or counter(k)))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    name = type(model).__name__
    shared = len(set(expected) & set(state))
    if shared < len(expected) / 2:
        prefixes = sorted({key.split(".", 1)[0] for key in state})
        raise CheckpointMismatchError(
            f"{origin}: not a {name} checkpoint: only {shared} of the {len(expected)} weights of "
            f"{name} are in it (its weights are under {', '.join(prefixes[:6])}"
            f"{' ...' if len(prefixes) > 6 else ''}); a checkpoint of another model?"
        )
    if missing or unexpected or wrong_shape:
        config = getattr(model, "config", "")
        raise CheckpointMismatchError(
            f"{origin}: checkpoint does not fit {type(model).__name__}({config})\n"
            f"  missing: {missing[:20]}{' ...' if len(missing) > 20 else ''}\n"
            f"  unexpected: {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}\n"
            f"  wrong shape: {wrong_shape[:20]}"
        )
    model.load_state_dict(state, strict=False)
    return model


def network_weights(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The network's part of a vistra (Lightning) checkpoint's state (``network.*``, prefix
    removed); any other state is returned as it is."""
    if not any(key.startswith("network.") for key in state):
        return state
    return {k[len("network.") :]: v for k, v in state.items() if k.startswith("network.")}


def load_with_new_class_head(
    model: torch.nn.Module, state: dict[str, Tensor], origin: str | Path, head: str
) -> torch.nn.Module:
    """``load_checked``, except that when the file's class head (``head`` + ``.weight`` /
    ``.bias``, [C+1, d] / [C+1]) has another class count than ``model``, that head keeps its
    initialisation and a message says so; every other weight must still fit exactly."""
    keys = (f"{head}.weight", f"{head}.bias")
    expected = model.state_dict()
    if keys[0] not in state or state[keys[0]].shape == expected[keys[0]].shape:
        return load_checked(model, state, origin)
    file_classes, model_classes = state[keys[0]].shape[0] - 1, expected[keys[0]].shape[0] - 1
    print(f"{origin}: {file_classes} classes in the file, {model_classes} in the model: the "
          f"class head ({head}) starts from scratch, every other weight is loaded",
          file=sys.stderr)  # fmt: skip
    kept = {k: v for k, v in state.items() if k not in keys}
    return load_checked(model, kept, origin, may_be_missing=lambda key: key in keys)
