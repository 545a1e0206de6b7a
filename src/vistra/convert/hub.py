"""Hugging Face model ids (``facebook/detr-resnet-50``) -> files already in the local Hugging
Face cache, never the network.

The cache is ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``, read
when a name is looked up (``huggingface_hub`` reads it once, at import). A name is looked up
only when no file or folder of that name exists, so a local path always wins.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# owner/name as the Hub spells them; a path with a file suffix or more parts is a path.
MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
FILE_SUFFIXES = (".ckpt", ".onnx", ".pt", ".pt2", ".pth", ".bin", ".safetensors", ".pkl")


def is_model_id(name: str | Path) -> bool:
    text = str(name)
    return (bool(MODEL_ID.match(text)) and not Path(text).exists()
            and not text.lower().endswith(FILE_SUFFIXES))  # fmt: skip


def is_pretrained(name: str | Path) -> bool:
    """A model id or a ``save_pretrained`` folder (what ``Predictor.from_pretrained`` takes),
    not a file."""
    return is_model_id(name) or Path(name).is_dir()


def cache_folder() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def local_snapshot(model_id: str) -> Path:
    """The cached snapshot folder of ``model_id`` (its ``main``), or a one-line error saying
    where it was looked for and how to put it there."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = cache_folder()
    try:
        return Path(snapshot_download(model_id, cache_dir=cache, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        raise FileNotFoundError(
            f"{model_id}: not in the Hugging Face cache {cache} (vistra never downloads); on a "
            f"machine with a connection run `hf download {model_id}` and copy its cache folder "
            "here, or point HF_HUB_CACHE at a copy"
        ) from None


def model_folder(name: str | Path) -> Path | None:
    """The folder of a model id (its cached snapshot) or of a ``save_pretrained`` folder;
    ``None`` for anything else (a file)."""
    if is_model_id(name):
        return local_snapshot(str(name))
    path = Path(name)
    return path if path.is_dir() else None


def weight_file(name: str | Path) -> Path:
    """A weight file: the path itself, or the weights of a model id / ``save_pretrained``
    folder (``model.safetensors``, else ``pytorch_model.bin``)."""
    folder = model_folder(name)
    if folder is None:
        return Path(name)
    for file in WEIGHT_FILES:
        if (folder / file).is_file():
            return folder / file
    raise FileNotFoundError(f"{name}: no {' or '.join(WEIGHT_FILES)} in {folder} (a model split "
                            "into several files is not supported)")  # fmt: skip
