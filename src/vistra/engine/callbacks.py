"""Callbacks the ``vistra`` command adds: a progress bar with real epoch totals, a parameter
count instead of Lightning's table, the run summary at the end, and atomic checkpoint files."""

from __future__ import annotations

import math
import os
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only

from vistra.convert.safe import load_torch_file
from vistra.engine.run_errors import CheckpointWriteError
from vistra.engine.time_budget import describe, time_budget
from vistra.inference.checkpoint import model_class

# The metric that says how well a run went, first found wins.
HEADLINE_METRICS = ("val/PQ", "val/AP", "val/mIoU", "val/top1", "val/knn_top1", "train/loss")


def total_epochs(trainer: L.Trainer) -> int | None:
    """Epochs the run will take: ``max_epochs``, or fewer when ``max_steps`` ends it first."""
    limits = []
    if trainer.max_epochs is not None and trainer.max_epochs > 0:
        limits.append(trainer.max_epochs)
    batches = trainer.num_training_batches
    if trainer.max_steps > 0 and batches not in (0, math.inf):
        steps_per_epoch = max(1, math.ceil(batches / trainer.accumulate_grad_batches))
        limits.append(math.ceil(trainer.max_steps / steps_per_epoch))
    return min(limits) if limits else None


def epoch_description(trainer: L.Trainer, current_epoch: int) -> str:
    total = total_epochs(trainer)
    return f"Epoch {current_epoch + 1}" + (f"/{total}" if total else "")


class RichBar(RichProgressBar):
    """Lightning's rich bar reading ``Epoch 3/20`` (counted from 1) and without ``v_num``."""

    def _get_train_description(self, current_epoch: int) -> str:
        text = epoch_description(self.trainer, current_epoch)
        return f"{text:{len(self.validation_description)}}"

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class PlainBar(TQDMProgressBar):
    """Lightning's tqdm bar (when rich is not installed) with the same description."""

    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(epoch_description(trainer, trainer.current_epoch))

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


def progress_bar() -> L.Callback:
    try:
        import rich  # noqa: F401
    except ModuleNotFoundError:
        return PlainBar()
    return RichBar()


class ParameterCount(L.Callback):
    """One line per part of the task: parameters, trainable ones."""

    @rank_zero_only
    def on_fit_start(self, trainer, pl_module) -> None:
        parts = [(name, module) for name, module in pl_module.named_children()
                 if any(True for _ in module.parameters())]  # fmt: skip
        for name, module in parts:
            total = sum(p.numel() for p in module.parameters())
            trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
            print(f"{name} ({model_class(module).__name__}): {_millions(total)} parameters, "
                  f"{_millions(trainable)} trained")  # fmt: skip


class RunSummary(L.Callback):
    """At the end of ``fit``: the run directory, last and best checkpoint, headline metric.

    Printed at teardown, after the progress bar (listed before this callback) has closed."""

    @rank_zero_only
    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            for line in summary_lines(trainer):
                print(line)

    @rank_zero_only
    def on_exception(self, trainer, pl_module, exception) -> None:
        if isinstance(exception, KeyboardInterrupt):
            for line in summary_lines(trainer):
                print(line)


def summary_lines(trainer: L.Trainer) -> list[str]:
    # The logger's folder, not ``trainer.log_dir``: that one is a collective call under DDP,
    # and this runs on rank zero only.
    folder = trainer.loggers[0].log_dir if trainer.loggers else trainer.default_root_dir
    lines = [f"run directory: {folder}"]
    callback = trainer.checkpoint_callback
    if callback is not None and callback.last_model_path:
        progress = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
        lines.append(f"last checkpoint: {callback.last_model_path} ({progress})")
    if callback is not None and callback.monitor and callback.best_model_path:
        score = callback.best_model_score
        value = f" ({callback.monitor} {float(score):.4f})" if score is not None else ""
        lines.append(f"best checkpoint: {callback.best_model_path}{value}")
    metrics = trainer.callback_metrics
    for name in HEADLINE_METRICS:
        if name in metrics:
            lines.append(f"{name}: {float(metrics[name]):.4f}")
            break
    budget = time_budget(trainer)
    if budget is not None:
        lines.append(f"time: {describe(budget.split())}")
    return lines


class FinalCheckpoint(L.Callback):
    """``last.ckpt`` also after the final step, which a step interval
    (``--checkpoint.every_n_train_steps``) does not reach unless it divides the run, and which
    Lightning writes at the end only when no checkpoint was written before.

    A run that stops at ``max_steps`` saves it right after that step, as a mid-epoch
    checkpoint: saved after the loop has ended, it would record the epoch as finished, and a
    longer run continued from it (``--ckpt_path last --trainer.max_steps`` larger) would skip
    the rest of that epoch."""

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        callback = trainer.checkpoint_callback
        every = getattr(callback, "_every_n_train_steps", 0) or 0
        if every and trainer.global_step % every == 0:
            return  # the callback saves this step itself, its numbered file and last.ckpt
        if 0 < trainer.max_steps <= trainer.global_step:
            self._save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._save(trainer)

    @staticmethod
    def _save(trainer) -> None:
        callback = trainer.checkpoint_callback
        if callback is None or not callback.save_last:
            return
        if getattr(callback, "_last_global_step_saved", None) == trainer.global_step:
            return
        # The callback's own writer keeps its file name and its record of it consistent (a
        # second writer would make it fall back to last-v1.ckpt).
        callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file in the same folder, then renamed: a kill
    mid-write leaves the previous file whole. Read as data (see ``load_checkpoint``)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        if "://" in str(path):  # remote storage: Lightning's own writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            torch.save(checkpoint, temporary)
            os.replace(temporary, path)
        except OSError as error:
            raise CheckpointWriteError(unwritable(path, error)) from None
        except RuntimeError as error:  # torch's zip writer reports a full disk as its own error
            if "write" not in str(error).lower():
                raise
            raise CheckpointWriteError(unwritable(path, error)) from None
        finally:
            temporary.unlink(missing_ok=True)

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None):
        """Local files through ``load_torch_file`` (tensors and plain data unless the user
        trusts the file; a refusal names it), remote ones through Lightning's reader."""
        if "://" in str(path):
            return super().load_checkpoint(path, map_location, weights_only)
        return load_torch_file(path)


def unwritable(path: Path, error: Exception) -> str:
    """One line on a checkpoint that could not be written, and what is left of the last one."""
    reason = os.strerror(error.errno) if getattr(error, "errno", None) else str(error)
    if getattr(error, "errno", None) is None and "file write failed" in str(error):
        reason = "the file could not be written (a full disk?)"
    kept = (f"the previous {path.name} is intact" if path.is_file() else
            "no earlier checkpoint of this name was there")  # fmt: skip
    return f"{path}: cannot write the checkpoint: {reason.lower()}; {kept}"


def _millions(count: int) -> str:
    return f"{count / 1e6:.1f} M" if count >= 1e5 else f"{count:,}"
