"""What a refused command may not do: change a file outside its output folder."""

from __future__ import annotations

from pathlib import Path


def files_under(root: Path, outputs: tuple[Path, ...] = ()) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` but those in ``outputs``: relative name -> (size, mtime)."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and not any(path.is_relative_to(out) for out in outputs):
            status = path.stat()
            found[path.relative_to(root).as_posix()] = (status.st_size, status.st_mtime_ns)
    return found
