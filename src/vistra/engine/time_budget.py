"""Where a run's wall-clock time goes: waiting for batches, training steps, evaluation.

Measured on the host clock between Lightning's hooks. On an accelerator, steps run
asynchronously, so part of a step's time can show up in the next wait for data; on the CPU
the split is exact.
"""

from __future__ import annotations

import time

import lightning as L

PARTS = ("data", "training", "evaluation")


class TimeBudget(L.Callback):
    """Seconds spent waiting for training batches (``data``: loading, decoding, augmenting,
    collating), in training steps (forward, backward, optimizer) and in validation (including
    its data and metrics); ``other`` is the rest of the run (start-up, checkpoints)."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self._started = self._ended = self._batch_started = self._ready = self._evaluating = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self._started, self._ended = time.perf_counter(), None

    def on_fit_end(self, trainer, pl_module) -> None:
        # A demo that runs several fits reads every split at its end: a finished fit's total
        # must not keep growing with the fits that came after it.
        self._ended = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._ready = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._ready is not None:
            self.seconds["data"] += now - self._ready
        self._batch_started = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._batch_started is not None:
            self.seconds["training"] += now - self._batch_started
        self._ready = now

    def on_validation_start(self, trainer, pl_module) -> None:
        self._evaluating = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        now = time.perf_counter()
        if self._evaluating is not None:
            self.seconds["evaluation"] += now - self._evaluating
        self._ready = now  # a validation between two batches is not time spent waiting for data

    def split(self) -> dict[str, float]:
        """Seconds per part, with ``other`` and ``total`` (from the fit's start to its end, or to
        now while it runs)."""
        if self._started is None:
            total = 0.0
        else:
            total = (self._ended or time.perf_counter()) - self._started
        other = max(total - sum(self.seconds.values()), 0.0)
        return {**self.seconds, "other": other, "total": total}


def describe(split: dict[str, float]) -> str:
    """``4 min 12 s: data 10 s, training 3 min 50 s, evaluation 9 s, other 3 s``."""
    parts = ", ".join(f"{name} {duration(split[name])}" for name in (*PARTS, "other"))
    return f"{duration(split['total'])}: {parts}"


def duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{seconds:.0f} s" if seconds >= 1 else (
        f"{seconds:.1f} s")  # fmt: skip


def time_budget(trainer) -> TimeBudget | None:
    return next((c for c in trainer.callbacks if isinstance(c, TimeBudget)), None)
