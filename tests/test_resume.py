"""The documented resume, as a user runs it: ``vistra fit`` killed with SIGKILL mid-epoch, or
stopped by SIGTERM / SIGUSR1 (preemption), then ``vistra fit ... --ckpt_path last`` from the
same folder, with the command's own logger and checkpoint folder. It must continue the same run
directory and end with the weights of an uninterrupted run."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from runner import run_vistra

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "supcon" / "resnet18_digits.yaml"
SHRINK = [  # sizes and steps only
    "--trainer.max_epochs=2",
    "--data.init_args.image_size=16",
    "--model.init_args.network.init_args.hidden_dim=64",
    "--trainer.log_every_n_steps=2",
]
# README: "--checkpoint.every_n_train_steps N" saves mid-epoch (what a SIGKILL leaves)
EVERY_2_STEPS = "--checkpoint.every_n_train_steps=2"
STEPS_PER_EPOCH = 1437 // 128
KILL_AFTER_STEP = STEPS_PER_EPOCH + 3  # a checkpoint in the middle of the second epoch
RUN = Path("vistra_runs/supcon_digits/lightning_logs")


def vistra_fit(cwd: Path, *extra: str, port: int | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "vistra.cli", "fit", "--config", str(CONFIG), *SHRINK, *extra]
    env = {**os.environ, "MASTER_PORT": str(port)} if port else None  # DDP runs side by side
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip


def fit_to_the_end(cwd: Path, *extra: str) -> str:
    """A run nobody stops (``runner``: the process is not what these tests are about)."""
    result = run_vistra("fit", "--config", CONFIG, *SHRINK, *extra, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def free_ports(count: int) -> list[int]:
    """Ports free now and different from each other (all bound at once, then released)."""
    import socket

    probes = [socket.socket() for _ in range(count)]
    for probe in probes:
        probe.bind(("127.0.0.1", 0))
    ports = [probe.getsockname()[1] for probe in probes]
    for probe in probes:
        probe.close()
    return ports


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


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """The final weights of the run nobody stopped (a checkpoint interval changes nothing)."""
    folder = tmp_path_factory.mktemp("straight")
    fit_to_the_end(folder)
    return weights(folder / RUN / "version_0/checkpoints/last.ckpt")


def assert_same_weights(resumed: dict, expected: dict) -> None:
    assert resumed.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=0, msg=name)


def logged_step(folder: Path) -> int:
    """The last step the run's metrics.csv shows (-1 before the first row)."""
    try:
        rows = list(csv.DictReader((folder / RUN / "version_0" / "metrics.csv").open()))
        return max(int(row["step"]) for row in rows)
    except (FileNotFoundError, ValueError, KeyError):
        return -1


def test_sigkill_then_ckpt_path_last_continues_the_run(tmp_path, uninterrupted):
    killed = tmp_path / "killed"
    killed.mkdir()

    process = vistra_fit(killed, EVERY_2_STEPS)
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

    output = fit_to_the_end(killed, EVERY_2_STEPS, "--ckpt_path", "last")
    assert (
        "resuming from" in output and str(Path("version_0", "checkpoints", "last.ckpt")) in output
    )
    assert sorted(p.name for p in (killed / RUN).iterdir()) == ["version_0"]
    assert_same_weights(weights(last), uninterrupted)
    rows = list(csv.DictReader((killed / RUN / "version_0" / "metrics.csv").open()))
    assert rows[: len(rows_before)] == rows_before  # the killed run's rows are kept
    steps = [int(row["step"]) for row in rows]
    assert steps == sorted(steps) and steps[-1] > step_at_kill
    assert list((killed / RUN / "version_0").glob("events.out.tfevents.*"))  # TensorBoard too


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGUSR1"])
def test_a_stop_signal_saves_the_step_and_the_run_continues_exactly(stop, tmp_path,
                                                                    uninterrupted):  # fmt: skip
    """Preemption with the user's defaults (a checkpoint every 500 steps: none before the
    signal): the signal's own checkpoint is the only one, the exit is clean (code 0, one line,
    no traceback), and resuming from it ends with the uninterrupted run's weights."""
    process = vistra_fit(tmp_path)
    deadline = time.monotonic() + 600
    while logged_step(tmp_path) < KILL_AFTER_STEP:
        assert process.poll() is None, "the run ended before the signal"
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.kill(process.pid, getattr(signal, stop))
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    message = stderr.strip().splitlines()[-1]
    assert message.startswith(f"vistra: stopped by {stop} after step ") and "--ckpt_path last" in (
        message
    )
    last = tmp_path / RUN / "version_0" / "checkpoints" / "last.ckpt"
    step = saved_step(last)
    assert f"after step {step};" in message
    assert KILL_AFTER_STEP <= step < 2 * STEPS_PER_EPOCH and step % STEPS_PER_EPOCH > 0
    fit_to_the_end(tmp_path, "--ckpt_path", "last")
    assert_same_weights(weights(last), uninterrupted)


def test_sigterm_stops_every_ddp_process_at_the_same_step(tmp_path):
    """2 processes (DDP, gloo): SIGTERM reaches only the process the user started; the other
    learns of it in the next step, both stop after the same step with code 0, and resuming
    under DDP ends with the weights of an uninterrupted 2-process run."""
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]
    per_rank = (1437 + 1) // 2 // 128  # training batches per epoch on each of the 2 ranks
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    straight.mkdir(), stopped.mkdir()
    # The reference beside the stopped run (gloo's waits overlap), each on its own port.
    ports = free_ports(2)
    reference = vistra_fit(straight, *ddp, port=ports[0])
    process = vistra_fit(stopped, *ddp, port=ports[1])
    deadline = time.monotonic() + 600
    while logged_step(stopped) < per_rank + 2:
        assert process.poll() is None, "the run ended before the signal"
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    last = stopped / RUN / "version_0" / "checkpoints" / "last.ckpt"
    step = saved_step(last)
    assert f"vistra: stopped by SIGTERM after step {step};" in stderr
    assert step % per_rank > 0  # mid-epoch
    finished(reference)
    finished(vistra_fit(stopped, *ddp, "--ckpt_path", "last"))
    expected = weights(straight / RUN / "version_0/checkpoints/last.ckpt")
    assert_same_weights(weights(last), expected)


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
