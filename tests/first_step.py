"""A callback the world-size tests add to ``vistra fit`` to read its first training step: the
loss this process computed, the gradients the optimizer is about to use (after DDP has
averaged them, before clipping) and the floating buffers after the step (BatchNorm's running
statistics). It only records; the run is the user's."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch


class FirstStepRecorder(L.Callback):
    def __init__(self, folder: str) -> None:
        self.folder, self.gradients, self.saved = Path(folder), None, False

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == 0 and self.gradients is None:
            named = pl_module.named_parameters()
            self.gradients = {n: p.grad.detach().float().clone()
                              for n, p in named if p.grad is not None}  # fmt: skip

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.saved or self.gradients is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        buffers = {name: b.detach().float().clone() for name, b in pl_module.named_buffers()
                   if b.is_floating_point()}  # fmt: skip
        torch.save({"loss": loss.detach().float(), "gradients": self.gradients,
                    "buffers": buffers}, self.folder / f"rank{trainer.global_rank}.pt")  # fmt: skip
        self.saved = True
