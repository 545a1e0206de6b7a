"""Reading files people hand over without running code from them.

A checkpoint or weight file is data; pickle, the format under ``.pth``/``.ckpt``/``.pkl``, can
name any importable function and have it called while loading. Everything vistra reads goes
through here: PyTorch files with ``torch.load(weights_only=True)`` (tensors and plain
containers only), detectron2 ``.pkl`` files with an unpickler that admits only numpy arrays and
builtin containers, ``.safetensors`` with safetensors. ``unsafe=True`` (the ``--unsafe-load``
flag, or ``VISTRA_UNSAFE_LOAD=1``) lifts the restriction for files the user trusts.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

UNSAFE_ENVIRONMENT = "VISTRA_UNSAFE_LOAD"

# What a detectron2 model-zoo pickle needs: numpy arrays (rebuilt through these) in dicts.
PICKLE_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"),
}


class UnsafeFileError(ValueError):
    """A file that would run code (or build objects other than data) when loaded."""


def unsafe_allowed(unsafe: bool | None = None) -> bool:
    if unsafe is not None:
        return unsafe
    return os.environ.get(UNSAFE_ENVIRONMENT, "") not in ("", "0")


def refusal(path: str | Path, detail: str) -> UnsafeFileError:
    """The refusal for ``path``; ``detail`` is the loader's complaint (what the file names is
    picked out of PyTorch's long message)."""
    named = re.search(r"GLOBAL ([\w.]+)", detail)
    detail = f"it names {named.group(1)}" if named else detail.splitlines()[0][:200]
    return UnsafeFileError(
        f"{path}: refused to load: the file holds more than tensors and plain data ({detail}). "
        f"Load it only if you trust where it came from: --unsafe-load "
        f"(or {UNSAFE_ENVIRONMENT}=1)"
    )


def load_torch_file(path: str | Path, unsafe: bool | None = None) -> Any:
    """``torch.load`` of a ``.pth`` / ``.pt`` / ``.ckpt`` / ``.bin`` file on the CPU."""
    trusted = unsafe_allowed(unsafe)
    if trusted:
        warnings.warn(f"{path}: loading with pickle's full powers (unsafe load)", stacklevel=2)
    try:
        return torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as error:
        raise refusal(path, str(error)) from None


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in PICKLE_ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}")


def load_pickle_file(path: str | Path, unsafe: bool | None = None) -> Any:
    """A detectron2-style ``.pkl`` (numpy arrays in dicts, Python 2 pickles included)."""
    trusted = unsafe_allowed(unsafe)
    if trusted:
        warnings.warn(f"{path}: loading with pickle's full powers (unsafe load)", stacklevel=2)
    reader = pickle.Unpickler if trusted else _DataOnlyUnpickler
    with open(path, "rb") as file:
        try:
            return reader(file, encoding="latin1").load()
        except pickle.UnpicklingError as error:
            raise refusal(path, str(error)) from None
