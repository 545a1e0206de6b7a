"""Resume equals an uninterrupted run for the families whose training steps draw random
numbers (DETR's dropout, MAE's masks, Mask2Former's point sampling), through the command.

The uninterrupted run keeps every step checkpoint (``--checkpoint.save_top_k=-1``): the one
from mid-epoch stands in for the ``last.ckpt`` a kill would have left (``test_resume.py`` kills
a run for real). ``vistra fit --ckpt_path`` from that file, in a copy of the run folder, must
end with the same weights (bit-equal here; ``assert_same_training`` says what else it allows).
DETR also resumes mid-epoch under 2-process DDP.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from command import shapes_data_args
from runner import run_vistra

from vistra.data.shapes import write_shapes

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TWO_PROCESSES = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]


def vistra_fit(*args, cwd: Path) -> str:
    result = run_vistra("fit", *args, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume") / "shapes"
    write_shapes(root, 8, 2, 64, seed=3)
    return root


def weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_resume_equals_straight(args: list[str], resume_step: int, folder: Path) -> None:
    straight, resumed = folder / "straight", folder / "resumed"
    straight.mkdir()
    vistra_fit(*args, "--checkpoint.save_top_k=-1", cwd=straight)
    shutil.copytree(straight, resumed)
    (last,) = straight.rglob("last.ckpt")
    (middle,) = resumed.rglob(f"epoch=*-step={resume_step}.ckpt")
    output = vistra_fit(*args, "--checkpoint.save_top_k=-1", "--ckpt_path", middle, cwd=resumed)
    assert "resuming from" in output
    (resumed_last,) = resumed.rglob("last*.ckpt")  # its own last.ckpt, no last-v1.ckpt
    expected, got = weights(last), weights(resumed_last)
    steps = [torch.load(path, weights_only=True)["global_step"] for path in (last, resumed_last)]
    assert steps[0] == steps[1] > resume_step
    assert expected.keys() == got.keys()
    assert_same_training(expected, got)


def assert_same_training(expected: dict, got: dict) -> None:
    """Bit-equal weights, or equal up to float rounding in a few elements.

    On this machine the runs are bit-equal. Some CPUs' kernels sum in an order that depends on
    thread scheduling, which leaves rounding-size differences that Adam can enlarge in the
    few weights whose gradient is near zero. A resume that replays a wrong batch or a wrong
    dropout mask moves nearly every weight instead (measured: 94% of them by over 1e-6).
    """
    names = [name for name in expected if expected[name].is_floating_point()]
    for name in expected.keys() - names:
        assert torch.equal(got[name], expected[name]), name
    differences = torch.cat([(got[n] - expected[n]).abs().flatten().double() for n in names])
    moved = (differences > 1e-6).double().mean().item()
    worst = max(names, key=lambda n: (got[n] - expected[n]).abs().max().item())
    assert moved < 1e-3, f"{moved:.1%} of the weights differ by over 1e-6 (most: {worst})"


def test_detr_with_dropout_resumes_mid_epoch_exactly(shapes, tmp_path):
    # 8 images in batches of 2: 4 steps an epoch; step 6 is the middle of the second epoch.
    args = ["--config", CONFIGS / "detr/shapes.yaml", *shapes_data_args(shapes, "instances"),
            "--trainer.max_epochs=3", "--checkpoint.every_n_train_steps=3",
            "--model.init_args.network.init_args.dropout=0.1"]  # fmt: skip
    assert_resume_equals_straight(args, 6, tmp_path)


def test_mask2former_point_sampling_resumes_mid_epoch_exactly(shapes, tmp_path):
    args = ["--config", CONFIGS / "mask2former/shapes.yaml", *shapes_data_args(shapes, "panoptic"),
            "--trainer.max_epochs=2", "--checkpoint.every_n_train_steps=3",
            "--data.init_args.size=64", "--model.init_args.num_points=64"]  # fmt: skip
    assert_resume_equals_straight(args, 3, tmp_path)


def test_mae_random_masks_resume_mid_epoch_exactly(tmp_path):
    # 1437 digits in batches of 256: 6 steps an epoch; step 9 is the middle of the second.
    args = ["--config", CONFIGS / "mae/vit_tiny_digits.yaml", "--trainer.max_epochs=2",
            "--checkpoint.every_n_train_steps=3", "--data.init_args.batch_size=256",
            "--model.init_args.warmup_epochs=1"]  # fmt: skip
    assert_resume_equals_straight(args, 9, tmp_path)


def test_detr_resumes_mid_epoch_under_ddp(shapes, tmp_path):
    # Two ranks of 4 images in batches of 2: 2 steps an epoch; step 3 is mid-epoch.
    args = ["--config", CONFIGS / "detr/shapes.yaml", *shapes_data_args(shapes, "instances"),
            *TWO_PROCESSES, "--trainer.max_epochs=2", "--checkpoint.every_n_train_steps=3",
            "--model.init_args.network.init_args.dropout=0.1"]  # fmt: skip
    assert_resume_equals_straight(args, 3, tmp_path)
