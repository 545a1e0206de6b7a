"""``--ckpt_path last`` / ``--ckpt_path PATH``: find the killed run and continue it in place.

Lightning looks for ``last`` in the checkpoint folder of a *new* run directory, finds nothing
and starts from scratch; the command resolves it to the newest run's ``last.ckpt`` and makes
the loggers continue that run's ``version_N`` (metrics appended, no new run directory).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from vistra.engine.loggers import RUNS_FOLDER, existing_versions


@dataclass(frozen=True)
class RunDirectory:
    """``save_dir/name/version_N``: where a run's logs and ``checkpoints/`` live."""

    save_dir: str
    name: str
    version: int

    @property
    def path(self) -> Path:
        return Path(self.save_dir) / self.name / f"version_{self.version}"


def newest_resumable_run(save_dir: str | os.PathLike, name: str = RUNS_FOLDER):
    """``(RunDirectory, last.ckpt path)`` of the highest ``version_N`` holding a
    ``checkpoints/last.ckpt``, or None."""
    for version in sorted(existing_versions(Path(save_dir) / name), reverse=True):
        run = RunDirectory(os.path.abspath(save_dir), name, version)
        last = run.path / "checkpoints" / "last.ckpt"
        if last.is_file():
            return run, last
    return None


def run_of_checkpoint(path: str | os.PathLike) -> RunDirectory | None:
    """The run a checkpoint at ``.../<name>/version_N/checkpoints/<file>.ckpt`` belongs to."""
    path = Path(os.path.abspath(path))
    folder = path.parent
    match = re.fullmatch(r"version_(\d+)", folder.parent.name)
    if folder.name != "checkpoints" or match is None:
        return None
    return RunDirectory(os.fspath(folder.parent.parent.parent), folder.parent.parent.name,
                        int(match.group(1)))  # fmt: skip
