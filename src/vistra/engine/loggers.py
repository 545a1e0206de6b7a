"""The loggers of a ``vistra fit`` run: CSV and TensorBoard side by side in one run directory
(``<default_root_dir>/lightning_logs/version_N``), appending when a killed run is resumed."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

RUNS_FOLDER = "lightning_logs"


class AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is continued (its
    columns kept) instead of deleted: a resumed run adds its rows to the killed run's."""

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            self.metrics_keys = list(next(csv.reader(file), []))


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` writing through ``AppendingWriter``."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def next_version(save_dir: str | os.PathLike, name: str = RUNS_FOLDER) -> int:
    """The first unused ``version_N`` number under ``save_dir/name``."""
    return max(existing_versions(Path(save_dir) / name), default=-1) + 1


def existing_versions(root: Path) -> list[int]:
    if not root.is_dir():
        return []
    return [
        int(m.group(1)) for p in root.iterdir() if (m := re.fullmatch(r"version_(\d+)", p.name))
    ]


def run_loggers(save_dir: str | os.PathLike, version: int, name: str = RUNS_FOLDER) -> list:
    """CSV (first: it decides the checkpoint folder) and TensorBoard, when installed, writing
    to the same ``save_dir/name/version_N``."""
    # Rows are written as they are logged: a killed run keeps every row before the kill.
    loggers = [AppendingCSVLogger(save_dir, name=name, version=version, flush_logs_every_n_steps=1)]
    try:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir, name=name, version=version,
                                         default_hp_metric=False))  # fmt: skip
    except ModuleNotFoundError:  # tensorboard is optional for people who install without it
        pass
    return loggers
