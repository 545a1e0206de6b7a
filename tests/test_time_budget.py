"""``TimeBudget`` splits a run's time into waiting for batches, training steps and evaluation:
checked on a run whose loader and steps take known times (sleeps), and in the summary
``vistra fit`` prints."""

from __future__ import annotations

import time

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from vistra.engine.time_budget import TimeBudget, describe

LOAD, STEP, BATCHES, START = 0.03, 0.05, 6, 0.4


class SlowData(Dataset):
    def __len__(self) -> int:
        return BATCHES

    def __getitem__(self, index: int) -> torch.Tensor:
        time.sleep(LOAD)
        return torch.ones(2)


class SlowSteps(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def on_fit_start(self) -> None:  # after the callbacks' on_fit_start: counted as "other"
        time.sleep(START)

    def training_step(self, batch, batch_idx):
        time.sleep(STEP)
        return self.layer(batch).sum()

    def validation_step(self, batch, batch_idx):
        time.sleep(STEP)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_split_matches_known_loader_and_step_times():
    budget = TimeBudget()
    trainer = L.Trainer(max_epochs=1, callbacks=[budget], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        num_sanity_val_steps=0, accelerator="cpu")  # fmt: skip
    loader = DataLoader(SlowData(), batch_size=1)
    started = time.perf_counter()
    trainer.fit(SlowSteps(), loader, DataLoader(SlowData(), batch_size=2))
    wall = time.perf_counter() - started
    split = budget.split()
    assert split["data"] == pytest.approx(BATCHES * LOAD, rel=0.5)
    assert split["training"] == pytest.approx(BATCHES * STEP, rel=0.5)
    # validation: 3 batches of 2 images, each image loaded and each batch stepped
    assert split["evaluation"] == pytest.approx(BATCHES * LOAD + 3 * STEP, rel=0.5)
    # The known start-up sleep, plus Lightning's own bookkeeping between the hooks.
    assert START <= split["other"] <= START + 0.5
    # The fit as the clock outside it saw it: less only by what runs before on_fit_start.
    assert wall - 1.0 <= split["total"] <= wall
    assert describe(split).count(" s") >= 5
    time.sleep(0.3)  # a demo reads this fit's split after its next fit: it stays the same
    assert budget.split()["total"] == pytest.approx(split["total"], abs=0.05)


def test_vistra_fit_prints_where_its_time_went(trained):
    import re

    printed = trained.printed("mae")  # the session's one-epoch MAE fit
    line = re.search(r"time: (.*)", printed)
    assert line, printed[-2000:]
    for part in ("data", "training", "evaluation", "other"):
        assert re.search(rf"{part} [0-9.]+ s", line.group(1)), line.group(1)
