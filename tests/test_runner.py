"""The in-process runner (``runner.run_vistra``) behaves as separate ``vistra`` processes do.

Two fits in a row with different seeds and working folders, then two predicts in a row of
which only the first has ``VISTRA_UNSAFE_LOAD=1``: each run gives what a subprocess with the
same arguments gives (weights, exit code, the refusal), and afterwards this process has its
own folder, environment, argv, signal handlers, random state, warnings filters and logging
handlers back. Sizes are shrunk through the command line (2 steps of 16-pixel digits).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from runner import run_in_process, signal_handlers

CONFIG = Path(__file__).resolve().parents[1] / "configs/supcon/resnet18_digits.yaml"
TINY = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
        "--data.init_args.image_size=16", "--data.init_args.batch_size=32"]  # fmt: skip


def in_a_process(words: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vistra.cli", *words], cwd=cwd,
                          env={**os.environ, **env}, capture_output=True, text=True)  # fmt: skip


def weights(folder: Path) -> dict[str, torch.Tensor]:
    (last,) = folder.rglob("last.ckpt")
    return torch.load(last, map_location="cpu", weights_only=True)["state_dict"]


def state_of_this_process() -> dict:
    return {
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "argv": list(sys.argv),
        "signals": signal_handlers(),
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state()[1].copy(),
        "random": random.getstate(),
        "filters": list(warnings.filters),
        "root": list(logging.root.handlers),
        "threads": torch.get_num_threads(),
    }


def test_two_runs_in_a_row_behave_as_two_processes(tmp_path):
    before = state_of_this_process()
    runs, references = {}, []
    for seed in (1, 2):
        words = ["fit", "--config", str(CONFIG), *TINY, f"--seed_everything={seed}"]
        folder = tmp_path / f"subprocess{seed}"
        folder.mkdir()
        references.append((seed, folder, subprocess.Popen(
            [sys.executable, "-m", "vistra.cli", *words], cwd=folder,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)))  # fmt: skip
    for seed in (1, 2):  # in this process, in a row, while the two processes run beside it
        words = ["fit", "--config", str(CONFIG), *TINY, f"--seed_everything={seed}"]
        folder = tmp_path / f"in_process{seed}"
        folder.mkdir()
        ran = run_in_process(words, folder, {})
        assert ran.returncode == 0, ran.stderr[-3000:]
        runs["in_process", seed] = weights(folder / "vistra_runs")
    for seed, folder, process in references:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
        runs["subprocess", seed] = weights(folder / "vistra_runs")
    for seed in (1, 2):  # each in-process run equals its process, and the seeds differ
        for name, value in runs["subprocess", seed].items():
            assert torch.equal(runs["in_process", seed][name], value), (seed, name)
    name = "network.encoder.conv1.weight"
    assert not torch.equal(runs["in_process", 1][name], runs["in_process", 2][name])
    assert not (tmp_path / "vistra_runs").exists() and not Path("vistra_runs").exists()

    # A checkpoint holding an object no safe load admits: allowed only with the variable set.
    checkpoint = torch.load(next((tmp_path / "in_process1").rglob("last.ckpt")),
                            map_location="cpu", weights_only=True)  # fmt: skip
    checkpoint["extra"] = argparse.Namespace(note="a pickled object")
    torch.save(checkpoint, tmp_path / "object.ckpt")
    image = tmp_path / "digit.png"
    Image.new("RGB", (16, 16), (200, 10, 10)).save(image)
    predict = ["predict", "--ckpt", str(tmp_path / "object.ckpt"), "--input", str(image),
               "--output", "out"]  # fmt: skip
    trusted = run_in_process(predict, tmp_path / "in_process1", {"VISTRA_UNSAFE_LOAD": "1"})
    untrusted = run_in_process(predict, tmp_path / "in_process2", {})
    expected = in_a_process(predict, tmp_path / "subprocess2", {})
    assert trusted.returncode == 0, trusted.stderr[-3000:]
    assert (tmp_path / "in_process1/out/embeddings.npy").is_file()
    assert untrusted.returncode == expected.returncode != 0
    assert untrusted.stderr.strip().splitlines()[-1] == expected.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "in_process2/out").exists()

    after = state_of_this_process()
    for key, value in before.items():
        if key in ("torch", "numpy"):
            assert np.array_equal(np.asarray(after[key]), np.asarray(value)), key
        else:
            assert after[key] == value, key
    assert signal.getsignal(signal.SIGTERM) == before["signals"][signal.SIGTERM]
