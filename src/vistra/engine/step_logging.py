"""Training losses in the logs at least once per epoch and at the last step.

Lightning logs step metrics every ``log_every_n_steps`` optimizer steps: a run shorter than
that (40 steps at the default 50) logged no curve at all, and a run ending between two of them
lost its last values. This callback writes the latest ``train/`` values at the last batch of
an epoch and at the final step when Lightning's own cadence did not.
"""

from __future__ import annotations

import lightning as L


class LogEveryEpoch(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        logged = step % max(trainer.log_every_n_steps, 1) == 0  # Lightning's own cadence
        last_of_epoch = batch_idx + 1 >= trainer.num_training_batches
        final = 0 < trainer.max_steps <= step
        if logged or not (last_of_epoch or final) or not trainer.is_global_zero:
            return
        values = {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if name.startswith("train/") and getattr(value, "numel", lambda: 1)() == 1
        }
        if not values:
            return
        values["epoch"] = trainer.current_epoch
        for logger in trainer.loggers:  # the step numbering Lightning's own rows use
            logger.log_metrics(values, step=step - 1)
