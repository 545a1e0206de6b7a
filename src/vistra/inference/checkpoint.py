"""Rebuilding a network from a vistra checkpoint alone.

Every vistra model records its constructor arguments in ``model.config``; tasks write
``{"class_path", "init_args"}`` into the checkpoint next to the weights, so a later stage (linear
probe, fine-tuning, prediction, export) needs nothing but the path.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from vistra.convert.files import NETWORK_KEY
from vistra.convert.safe import UnsafeFileError, load_torch_file


def model_class(network: nn.Module) -> type:
    """The vistra class of ``network``; FSDP (``fully_shard``) replaces a module's class by a
    subclass of it, which no checkpoint should name."""
    for cls in type(network).__mro__:
        if cls.__module__.startswith("vistra."):
            return cls
    return type(network)


def network_spec(network: nn.Module) -> dict:
    if not hasattr(network, "config"):
        raise TypeError(f"{type(network).__name__} does not record its constructor arguments")
    cls = model_class(network)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(network.config)}


# The networks a checkpoint may ask for, by class path: vistra's models and nothing else (a
# checkpoint is data; it must not choose what code runs). Only the named family's module is
# imported.
VISTRA_NETWORKS = frozenset({
    "vistra.models.supcon.SupConModel",
    "vistra.models.mae.MaskedAutoencoder",
    "vistra.models.vit_classifier.ViTClassifier",
    "vistra.models.detr.DETR",
    "vistra.models.mask2former.model.Mask2Former",
})  # fmt: skip


def vistra_network(class_path: str) -> type[nn.Module]:
    """The class of one of ``VISTRA_NETWORKS``."""
    import importlib

    module, name = class_path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


# Network arguments that name files: a checkpoint's weights are in the checkpoint itself.
FILE_ARGUMENTS = ("checkpoint", "backbone_checkpoint")


def build_network(spec: dict, origin: str | Path = "checkpoint", shapes: dict | None = None):
    """The network a checkpoint's ``{"class_path", "init_args"}`` describes, if it is one of
    ``VISTRA_NETWORKS`` and its arguments are plain data; arguments naming files are left out.
    ``shapes`` (the stored tensors' shapes by name): the arguments must make exactly these,
    checked on the meta device before anything is allocated."""
    class_path = spec.get("class_path") if isinstance(spec, dict) else None
    if class_path not in VISTRA_NETWORKS:
        raise ValueError(f"{origin}: the checkpoint asks for {class_path!r}, which is not a vistra "
                         f"network (one of {', '.join(sorted(VISTRA_NETWORKS))})")  # fmt: skip
    init_args = spec.get("init_args") or {}
    if not isinstance(init_args, dict) or not all(isinstance(k, str) for k in init_args):
        raise ValueError(f"{origin}: the checkpoint's network arguments are not a dict of names")
    init_args = without_files(init_args)
    network_class = vistra_network(class_path)
    if shapes is not None:
        check_shapes(network_class, init_args, shapes, origin)
    return network_class(**init_args)


def without_files(init_args: dict) -> dict:
    """Network arguments with every file argument set to ``None``."""
    return {k: None if k in FILE_ARGUMENTS else v for k, v in init_args.items()}


def check_shapes(network_class, init_args: dict, shapes: dict, origin) -> None:
    """``ValueError`` naming the first tensor the arguments would make in another shape than
    the stored one, or that the file does not hold (the network built on the meta device,
    without reading the files its arguments name: only sizes are compared)."""
    import torch

    try:
        with torch.device("meta"):
            planned = network_class(**without_files(init_args)).state_dict()
    except (TypeError, ValueError) as error:
        raise ValueError(f"{origin}: unusable network arguments ({error})") from None
    for name, tensor in planned.items():
        stored = shapes.get(name)
        if stored is None:
            raise ValueError(f"{origin}: its network arguments make {name}, which its weights "
                             "do not hold (another model size or kind?)")  # fmt: skip
        if tuple(stored) != tuple(tensor.shape):
            raise ValueError(f"{origin}: its network arguments make {name} of shape "
                             f"{list(tensor.shape)}, but its weights hold {list(stored)} (another "
                             "model size or class count?)")  # fmt: skip


def read_checkpoint(path: str | Path, unsafe: bool | None = None) -> dict:
    """A vistra checkpoint as a dict; errors name the file (missing, unreadable, not vistra's).

    Loaded as tensors and plain data (``torch.load(weights_only=True)``); ``unsafe`` (or
    ``VISTRA_UNSAFE_LOAD=1``) allows any pickle, for files the user trusts."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        checkpoint = load_torch_file(path, unsafe)
    except UnsafeFileError:
        raise
    except Exception as error:  # noqa: BLE001 - any reader failure is a bad file
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({error})") from None
    if not isinstance(checkpoint, dict) or NETWORK_KEY not in checkpoint:
        raise ValueError(f"{path}: not a vistra checkpoint (no '{NETWORK_KEY}' entry)")
    return checkpoint


def network_from_checkpoint(
    checkpoint: dict, prefix: str = "network.", origin: str | Path = "checkpoint"
) -> nn.Module:
    """Build the recorded network and load its weights (the ``prefix`` part of the state)."""
    state = {
        key[len(prefix) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(prefix)
    }
    shapes = {name: tuple(value.shape) for name, value in state.items() if hasattr(value, "shape")}
    network = build_network(checkpoint[NETWORK_KEY], origin, shapes)
    network.load_state_dict(state)
    return network


def load_network(path: str | Path, prefix: str = "network.") -> nn.Module:
    """The network saved by a vistra task at ``path``, with its trained weights."""
    return network_from_checkpoint(read_checkpoint(path), prefix, path)
