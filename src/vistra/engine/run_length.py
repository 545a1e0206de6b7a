"""A run continued to another length (``--ckpt_path last`` with a larger ``max_steps`` or
``max_epochs``) cannot end where one run of that length would when its learning-rate schedule
follows the planned length (cosine, poly): its first part followed the shorter plan. Such a
continuation is refused in one line; one of the same length, or of a schedule that does not
follow the length, goes on (and ends as one uninterrupted run: ``FinalCheckpoint``)."""

from __future__ import annotations

import lightning as L

from vistra.engine.run_errors import RunError

KEY = "vistra_planned_steps"


def planned_steps(trainer) -> int | None:
    """The run length the trainer's schedules were built for, if any follows one."""
    for config in trainer.lr_scheduler_configs:
        for factor in getattr(config.scheduler, "lr_lambdas", []):
            steps = getattr(factor, "planned_steps", None)
            if steps is not None:
                return steps
    return None


class RunLength(L.Callback):
    """Records the planned length in each checkpoint and compares it on a continued run."""

    def __init__(self) -> None:
        self.stored: int | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        steps = planned_steps(trainer)
        if steps is not None:
            checkpoint[KEY] = steps

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.stored = checkpoint.get(KEY)

    def on_train_start(self, trainer, pl_module) -> None:
        now = planned_steps(trainer)
        if self.stored is None or now is None or now == self.stored:
            return
        raise RunError(
            f"this run's learning-rate schedule was planned for {self.stored} steps, and "
            f"continuing it to {now} cannot end where one {now}-step run would (its first "
            f"part followed the {self.stored}-step plan): resume with the run's own "
            "--trainer.max_steps / --trainer.max_epochs, or start a new run from its weights"
        )
