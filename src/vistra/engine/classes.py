"""The data decides the class count: ``num_classes`` left out of a config is taken from the
data module, and a ``num_classes`` that contradicts the data stops the run before training."""

from __future__ import annotations

from typing import Any


class ClassCountError(ValueError):
    """A configured ``num_classes`` that differs from the classes the data defines."""


def data_classes(datamodule: Any) -> tuple[int, str] | None:
    """``(number of classes, the file or folder defining them)``; None for unlabelled data."""
    classes = getattr(datamodule, "classes", None)
    if not classes:
        return None
    origin = getattr(datamodule, "classes_origin", None) or type(datamodule).__name__
    return len(classes), str(origin)


def mismatch_message(configured: int, count: int, origin: str, where: str) -> str:
    return (
        f"{where}: num_classes is {configured} but {origin} defines {count} "
        f"categor{'y' if count == 1 else 'ies'}; set num_classes: {count} or leave it out "
        "(it is taken from the data)"
    )


def fill_num_classes(config: Any, count: int, origin: str, where: str = "model") -> list[str]:
    """Set every unset ``num_classes`` in a ``class_path`` / ``init_args`` tree to ``count``.

    Args:
        config: a jsonargparse ``Namespace`` (or dict) of the model section.
        count, origin: the data's class count and the file or folder that defines it.

    Returns:
        the dotted keys that were filled.

    Raises:
        ClassCountError naming both numbers and ``origin`` when one is set differently.
    """
    filled = []
    init_args = _get(config, "init_args")
    if init_args is None:
        return filled
    for key in _keys(init_args):
        value = _get(init_args, key)
        dotted = f"{where}.init_args.{key}"
        if key == "num_classes":
            if value is None:
                _set(init_args, key, count)
                filled.append(dotted)
            elif int(value) != count:
                raise ClassCountError(mismatch_message(int(value), count, origin, dotted))
        elif _get(value, "class_path") is not None:
            filled += fill_num_classes(value, count, origin, dotted)
    return filled


def check_against_data(configured: int | None, datamodule: Any, where: str) -> None:
    """Raise ``ClassCountError`` when ``configured`` contradicts the data module's classes
    (for runs that do not go through the ``vistra`` command)."""
    found = data_classes(datamodule)
    if configured is None or found is None:
        return
    count, origin = found
    if int(configured) != count:
        raise ClassCountError(mismatch_message(int(configured), count, origin, where))


def _get(container: Any, key: str) -> Any:
    if isinstance(container, dict):
        return container.get(key)
    return getattr(container, key, None) if hasattr(container, "__dict__") else None


def _set(container: Any, key: str, value: Any) -> None:
    if isinstance(container, dict):
        container[key] = value
    else:
        setattr(container, key, value)


def _keys(container: Any) -> list[str]:
    return list(container) if isinstance(container, dict) else list(vars(container))
