"""MAE pre-training through the `vistra` CLI, its predictions, and a linear probe rebuilt from
a pre-training checkpoint (the session's MAE learning run)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from families import top1_by_hand

from vistra.cli import VistraCLI

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "mae"
TINY = [
    "--trainer.max_epochs=2",
    "--trainer.limit_train_batches=3",
    "--trainer.limit_val_batches=2",
    "--trainer.check_val_every_n_epoch=1",
    "--trainer.enable_progress_bar=false",
    "--data.init_args.batch_size=32",
]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[VistraCLI, Path]:
    """Two epochs of 3 steps, validated after each: (the run, its folder)."""
    folder = tmp_path_factory.mktemp("mae_task")
    run = VistraCLI(args=["fit", "--config", str(CONFIGS / "vit_tiny_digits.yaml"), *TINY,
                          "--trainer.default_root_dir", str(folder / "mae")])  # fmt: skip
    return run, folder


def test_pretrain_logs_losses_knn_and_writes_reconstructions(pretrained):
    run, folder = pretrained
    metrics = run.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and torch.isfinite(metrics["val/loss"])
    assert 0.0 <= float(metrics["val/knn_top1"]) <= 1.0
    pictures = sorted((folder / "mae").rglob("reconstructions/epoch_*.png"))
    assert [p.name for p in pictures] == ["epoch_0000.png", "epoch_0001.png"]


def test_probe_loads_the_pretrained_encoder_and_logs_its_own_accuracy(mae_learning_run, tmp_path):
    checkpoint = mae_learning_run["checkpoint"]
    probe = VistraCLI(args=["fit", "--config", str(CONFIGS / "linear_digits.yaml"), *TINY,
                            "--model.checkpoint", checkpoint,
                            "--trainer.default_root_dir", str(tmp_path / "probe")])  # fmt: skip
    trained = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    for key, value in probe.model.network.state_dict().items():
        assert torch.equal(value, trained[f"network.{key}"]), key  # frozen: the pre-trained weights
    # The logged top-1 is the accuracy of the probe's own predictions on those batches.
    logged = float(probe.trainer.callback_metrics["val/top1"])
    assert logged == pytest.approx(top1_by_hand(probe, batches=2), abs=1e-6)


def test_without_knn_bank_validation_still_reports_loss_and_pictures(tmp_path):
    run = VistraCLI(args=["fit", "--config", str(CONFIGS / "vit_tiny_digits.yaml"), *TINY,
                          "--trainer.max_epochs=1", "--data.init_args.knn_bank=false",
                          "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    assert "val/loss" in run.trainer.callback_metrics
    assert "val/knn_top1" not in run.trainer.callback_metrics
    assert len(list(tmp_path.rglob("reconstructions/epoch_0000.png"))) == 1


def test_predict_writes_embeddings_and_a_reconstruction_grid(pretrained, tmp_path):
    fit, _ = pretrained
    checkpoint = fit.trainer.checkpoint_callback.last_model_path
    VistraCLI(args=["predict", "--config", str(CONFIGS / "vit_tiny_digits.yaml"),
                    "--ckpt_path", checkpoint, "--data.init_args.knn_bank=false",
                    "--trainer.enable_progress_bar=false",
                    "--trainer.default_root_dir", str(tmp_path / "predict")])  # fmt: skip
    (out,) = (tmp_path / "predict").rglob("predictions")
    held_out = fit.datamodule.val_source
    assert np.load(out / "embeddings.npy").shape == (len(held_out), 192)
    names = (out / "embeddings.txt").read_text().split()
    assert names == [held_out.item_name(i).as_posix() for i in range(len(held_out))]
    from PIL import Image

    width, height = Image.open(out / "reconstructions.png").size
    # 16 images, one row each: original | masked | reconstruction | reconstruction + visible
    assert height == pytest.approx(4 * width, rel=0.05)
