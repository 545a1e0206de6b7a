"""A run killed mid-epoch and resumed with ckpt_path="last" ends with the same weights as an
uninterrupted run of the same seed."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from vistra.data import ContrastiveDataModule, DigitsSource
from vistra.models import SupConModel
from vistra.tasks import ContrastivePretraining

STEPS_PER_EPOCH = 1437 // 128  # drop_last
CRASH_AT_STEP = STEPS_PER_EPOCH + 4  # in the middle of the second epoch


class Killed(RuntimeError):
    pass


class KillAtStep(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == CRASH_AT_STEP:
            raise Killed(f"killed at step {trainer.global_step}")


def run(root, callbacks=(), ckpt_path=None):
    L.seed_everything(0)
    task = ContrastivePretraining(
        SupConModel("resnet18", hidden_dim=64, feat_dim=32),
        optimizer="lars",
        lr=1.0,
        warmup_epochs=1,
    )
    data = ContrastiveDataModule(
        DigitsSource("train", image_size=16), image_size=16, batch_size=128
    )
    checkpoint = ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=2)
    trainer = L.Trainer(
        max_epochs=2,
        default_root_dir=root,
        callbacks=[checkpoint, *callbacks],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(task, data, ckpt_path=ckpt_path)
    return task


def test_kill_and_resume_gives_the_same_weights(tmp_path):
    reference = run(tmp_path / "straight")

    with pytest.raises(Killed):
        run(tmp_path / "killed", callbacks=[KillAtStep()])
    assert (tmp_path / "killed" / "last.ckpt").is_file()
    resumed = run(tmp_path / "killed", ckpt_path="last")

    for (name, expected), got in zip(reference.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(got, expected, rtol=0, atol=0, msg=name)
