"""The documented resume, as a user runs it: ``vistra fit`` killed with SIGKILL mid-epoch, then
``vistra fit ... --ckpt_path last`` from the same folder, with the command's own logger and
checkpoint folder. It must continue the same run directory and end with the weights of an
uninterrupted run."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "supcon" / "resnet18_digits.yaml"
SHRINK = [  # sizes and steps only (README: "--checkpoint.every_n_train_steps N" saves mid-epoch)
    "--trainer.max_epochs=2",
    "--data.init_args.image_size=16",
    "--model.init_args.network.init_args.hidden_dim=64",
    "--checkpoint.every_n_train_steps=2",
    "--trainer.log_every_n_steps=2",
]
STEPS_PER_EPOCH = 1437 // 128
KILL_AFTER_STEP = STEPS_PER_EPOCH + 3  # a checkpoint in the middle of the second epoch
RUN = Path("vistra_runs/supcon_digits/lightning_logs")


def vistra_fit(cwd: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "vistra.cli", "fit", "--config", str(CONFIG), *SHRINK, *extra]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def saved_step(path: Path) -> int:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)["global_step"]
    except Exception:  # noqa: BLE001 - not there yet, or being replaced
        return -1


def weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def finished(process: subprocess.Popen) -> str:
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    return stdout + stderr


def test_sigkill_then_ckpt_path_last_continues_the_run(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()

    process = vistra_fit(killed)
    last = killed / RUN / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 600
    while saved_step(last) < KILL_AFTER_STEP:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    step_at_kill = saved_step(last)
    assert step_at_kill % STEPS_PER_EPOCH > 0, "the kill should land mid-epoch"
    rows_before = list(csv.DictReader((killed / RUN / "version_0" / "metrics.csv").open()))
    assert len(rows_before) >= STEPS_PER_EPOCH // 2

    output = finished(vistra_fit(killed, "--ckpt_path", "last"))
    assert (
        "resuming from" in output and str(Path("version_0", "checkpoints", "last.ckpt")) in output
    )
    finished(vistra_fit(straight))

    assert sorted(p.name for p in (killed / RUN).iterdir()) == ["version_0"]
    resumed_weights = weights(last)
    for name, expected in weights(straight / RUN / "version_0/checkpoints/last.ckpt").items():
        torch.testing.assert_close(resumed_weights[name], expected, rtol=0, atol=0, msg=name)
    rows = list(csv.DictReader((killed / RUN / "version_0" / "metrics.csv").open()))
    assert rows[: len(rows_before)] == rows_before  # the killed run's rows are kept
    steps = [int(row["step"]) for row in rows]
    assert steps == sorted(steps) and steps[-1] > step_at_kill
    assert list((killed / RUN / "version_0").glob("events.out.tfevents.*"))  # TensorBoard too


def test_checkpoint_paths_name_their_run(tmp_path):
    from vistra.engine.resume import newest_resumable_run, run_of_checkpoint

    for version, has_last in ((0, True), (1, True), (2, False), (10, False)):
        folder = tmp_path / "lightning_logs" / f"version_{version}" / "checkpoints"
        folder.mkdir(parents=True)
        if has_last:
            (folder / "last.ckpt").write_bytes(b"")
    run, last = newest_resumable_run(tmp_path)
    assert run.version == 1 and last == run.path / "checkpoints" / "last.ckpt"
    picked = run_of_checkpoint(tmp_path / "lightning_logs/version_0/checkpoints/epoch=3.ckpt")
    assert (picked.save_dir, picked.name, picked.version) == (str(tmp_path), "lightning_logs", 0)
    assert run_of_checkpoint(tmp_path / "elsewhere" / "model.ckpt") is None
    assert newest_resumable_run(tmp_path / "nothing") is None
