"""Preemption: SIGTERM (a scheduler's notice, ``kill``) or SIGUSR1 (SLURM's warning signal,
``#SBATCH --signal=SIGUSR1@90``) during training saves ``last.ckpt`` after the step in
progress and stops the run cleanly; ``vistra fit ... --ckpt_path last`` continues it to the
weights an uninterrupted run would have.

The checkpoint is written where a step checkpoint (``--checkpoint.every_n_train_steps``) is:
after a batch's optimizer step, by the checkpoint callback's own writer, so resuming from it
is the same tested path. Every rank learns of a signal any rank received (SLURM signals all
tasks; ``kill`` reaches one process), and all stop after the same step.
"""

from __future__ import annotations

import os
import signal
import subprocess

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_info

STOP_SIGNALS = ("SIGTERM", "SIGUSR1")


class Preempted(SystemExit):
    """The run stopped on a signal after saving ``last.ckpt`` (exit code 0: a clean stop)."""

    def __init__(self, message: str) -> None:
        super().__init__(0)
        self.message = message


class StopOnSignal(L.Callback):
    """Catch SIGTERM / SIGUSR1 during ``fit``; at the end of the batch in progress write
    ``last.ckpt`` and raise ``Preempted``. Under SLURM with SIGUSR1 the job is requeued
    (``scontrol requeue``) so that it starts again and resumes (``--ckpt_path last``)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def on_train_start(self, trainer, pl_module) -> None:
        # After Lightning's own handlers (registered when the run starts), so these win:
        # Lightning's SIGTERM handler would stop the other ranks before they could save.
        for name in STOP_SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                self.previous[number] = signal.signal(number, self._handle)

    def on_train_end(self, trainer, pl_module) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous.clear()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        received = self._agreed(trainer)
        if not received:
            return
        callback = trainer.checkpoint_callback
        if callback is not None:
            callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))
        name = signal.Signals(received).name
        where = callback.last_model_path if callback is not None else "(no checkpoint callback)"
        if received == getattr(signal, "SIGUSR1", None) and trainer.is_global_zero:
            _requeue_slurm_job()
        rank_zero_info(f"{name} received: saved {where} at step {trainer.global_step}")
        raise Preempted(f"stopped by {name} after step {trainer.global_step}; {where} holds "
                        "the run: continue it with --ckpt_path last")  # fmt: skip

    def _agreed(self, trainer) -> int:
        """The signal any rank received (0: none), the same on every rank."""
        received = torch.tensor([self.received or 0], device=trainer.strategy.root_device)
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            dist.all_reduce(received, op=dist.ReduceOp.MAX)
        return int(received.item())


def _requeue_slurm_job() -> None:
    job = os.environ.get("SLURM_JOB_ID")
    if job is None:
        return
    try:
        subprocess.run(["scontrol", "requeue", job], check=True, capture_output=True)
        rank_zero_info(f"SLURM job {job} requeued")
    except (OSError, subprocess.CalledProcessError) as error:
        rank_zero_info(f"could not requeue SLURM job {job}: {error}")
