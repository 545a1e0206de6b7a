"""Rebuilding a network from a vistra checkpoint alone.

Every vistra model records its constructor arguments in ``model.config``; tasks write
``{"class_path", "init_args"}`` into the checkpoint next to the weights, so a later stage (linear
probe, fine-tuning, prediction, export) needs nothing but the path.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from vistra.convert.safe import UnsafeFileError, load_torch_file

NETWORK_KEY = "vistra_network"


def network_spec(network: nn.Module) -> dict:
    if not hasattr(network, "config"):
        raise TypeError(f"{type(network).__name__} does not record its constructor arguments")
    cls = type(network)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(network.config)}


def vistra_networks() -> dict[str, type[nn.Module]]:
    """The networks a checkpoint may ask for, by class path: vistra's models and nothing else
    (a checkpoint is data; it must not choose what code runs)."""
    from vistra import models

    classes = (models.SupConModel, models.MaskedAutoencoder, models.ViTClassifier, models.DETR,
               models.Mask2Former)  # fmt: skip
    return {f"{cls.__module__}.{cls.__qualname__}": cls for cls in classes}


def build_network(spec: dict, origin: str | Path = "checkpoint") -> nn.Module:
    """The network a checkpoint's ``{"class_path", "init_args"}`` describes, if it is one of
    ``vistra_networks()`` and its arguments are plain data."""
    allowed = vistra_networks()
    class_path = spec.get("class_path") if isinstance(spec, dict) else None
    if class_path not in allowed:
        raise ValueError(f"{origin}: the checkpoint asks for {class_path!r}, which is not a vistra "
                         f"network (one of {', '.join(sorted(allowed))})")  # fmt: skip
    init_args = spec.get("init_args") or {}
    if not isinstance(init_args, dict) or not all(isinstance(k, str) for k in init_args):
        raise ValueError(f"{origin}: the checkpoint's network arguments are not a dict of names")
    return allowed[class_path](**init_args)


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
    network = build_network(checkpoint[NETWORK_KEY], origin)
    state = {
        key[len(prefix) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(prefix)
    }
    network.load_state_dict(state)
    return network


def load_network(path: str | Path, prefix: str = "network.") -> nn.Module:
    """The network saved by a vistra task at ``path``, with its trained weights."""
    return network_from_checkpoint(read_checkpoint(path), prefix, path)


PREPROCESS_KEY = "vistra_preprocess"


def preprocess_spec(datamodule) -> dict | None:
    """How the data module prepares an image for evaluation, for inference without it.

    ``{"resize": "shorter_side", "size", "max_size"}`` (detection, segmentation: keep the aspect
    ratio) or ``{"resize": "center_crop", "size"}`` (classification, embeddings); ImageNet mean
    and standard deviation in both. None when the data module is unknown.
    """
    from vistra.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    hparams = getattr(datamodule, "hparams", None) or {}
    if "eval_size" in hparams:
        spec = {"resize": "shorter_side", "size": int(hparams["eval_size"]),
                "max_size": int(hparams.get("eval_max_size", 1333))}  # fmt: skip
    elif getattr(datamodule, "image_size", None):
        spec = {"resize": "center_crop", "size": int(datamodule.image_size)}
    else:
        return None
    return {**spec, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


CATEGORIES_KEY = "vistra_categories"


def data_categories(datamodule) -> dict | None:
    """``{"names", "ids"}`` of a labelled data module (ids: the file's category ids, or the
    labels 0..C-1 where the format has none); None for unlabelled data."""
    names = list(getattr(datamodule, "classes", None) or [])
    if not names:
        return None
    ids = getattr(datamodule, "category_ids", None)
    return {"names": names, "ids": list(ids) if ids is not None else list(range(len(names)))}


def describe_for_inference(checkpoint: dict, network, trainer) -> None:
    """Add what inference needs to ``checkpoint``: the network spec, the preprocessing and the
    data's category names and ids (tasks that know more, e.g. thing classes, write their own)."""
    checkpoint[NETWORK_KEY] = network_spec(network)
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    spec = preprocess_spec(datamodule)
    if spec is not None:
        checkpoint[PREPROCESS_KEY] = spec
    categories = data_categories(datamodule)
    if categories is not None and CATEGORIES_KEY not in checkpoint:
        checkpoint[CATEGORIES_KEY] = categories
