"""What a checkpoint's stored hyper-parameters may decide when ``--ckpt_path`` brings them back.

Lightning merges them over the config, and jsonargparse imports any class they name (a
``class_path``, or a dotted name where a class is expected). A checkpoint is data: its classes
must be vistra's own, and it may not name files to read (the weights travel in the checkpoint
itself; a stored ``checkpoint`` option would be read again at every resume).
"""

from __future__ import annotations

import importlib.util
import re

from vistra.convert.safe import UnsafeFileError

# A dotted Python name (``torch.nn.Linear``, ``os.system``): importable if given as a class.
DOTTED_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
OWN_PREFIXES = ("vistra.models.", "vistra.tasks.", "vistra.data.")
FILE_OPTIONS = ("checkpoint", "backbone_checkpoint")


def checked_hyper_parameters(values, origin: str, where: str = "hyper_parameters"):
    """``values`` with every file option set to ``None``; an ``UnsafeFileError`` naming the
    entry when a class or dotted name outside vistra's models, tasks and data appears."""
    if isinstance(values, dict):
        checked = {}
        for key, value in values.items():
            place = f"{where}.{key}"
            foreign = key == "class_path" and not str(value).startswith(OWN_PREFIXES)
            if foreign:
                raise UnsafeFileError(
                    f"{origin}: {place} is {value!r}, not one of vistra's "
                    "classes; a checkpoint cannot choose what code runs"
                )
            if key == "_class_path":  # the task: the caller admits vistra.tasks only
                checked[key] = value
                continue
            if key in FILE_OPTIONS and value is not None:
                checked[key] = None  # never a file the checkpoint names
                continue
            checked[key] = checked_hyper_parameters(value, origin, place)
        return checked
    if isinstance(values, (list, tuple)):
        return [checked_hyper_parameters(v, origin, f"{where}[{i}]") for i, v in enumerate(values)]
    if isinstance(values, str) and names_code(values):
        raise UnsafeFileError(f"{origin}: {where} names {values!r}, which is not one of vistra's "
                              "classes; a checkpoint cannot choose what code runs")  # fmt: skip
    return values


def names_code(text: str) -> bool:
    """A dotted name of an installed module's contents (``torch.nn.Linear``, ``this.x``)
    outside vistra's models, tasks and data; ``val.json`` names no module (looking a top-level
    name up runs nothing)."""
    if not DOTTED_NAME.match(text) or text.startswith(OWN_PREFIXES):
        return False
    return importlib.util.find_spec(text.split(".")[0]) is not None
