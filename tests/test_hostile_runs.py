"""Hostile and broken inputs, second round (issue 28), the runs' side: masks pycocotools would
trust, a panoptic segment listed twice, symlink loops, two writers of one run, a full disk,
checkpoints whose stored network arguments do not make their weights or name files, and
files given to ``--ckpt_path`` that are no checkpoints."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from command import shapes_data_args
from families import family_args
from PIL import Image
from runner import run_vistra
from unchanged import files_under

from vistra.data.shapes import write_shapes

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def one_line(run) -> str:
    """The line a refusal ends with (after Lightning's start-up notes), and no traceback."""
    last = run.stderr.strip().splitlines()[-1]
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert last.startswith("vistra"), run.stderr[-3000:]
    return last


@pytest.fixture
def shapes(tmp_path) -> Path:
    root = tmp_path / "shapes"
    write_shapes(root, train=3, val=2, size=48, seed=0)
    return root


def test_an_overrunning_rle_is_named_by_data_check_and_refused_by_fit(shapes, tmp_path):
    """RLE counts [0, 10^9] on a 48 x 48 image made pycocotools' evaluation spin forever."""
    annotations = shapes / "annotations/instances_train.json"
    data = json.loads(annotations.read_text())
    data["annotations"][0]["segmentation"] = {"size": [48, 48], "counts": [0, 10**9]}
    annotations.write_text(json.dumps(data))
    check = run_vistra("data", "check", annotations, "--images", shapes / "images/train",
                       cwd=tmp_path)  # fmt: skip
    assert check.returncode != 0 and "Traceback" not in check.stderr
    assert "segmentation.counts" in check.stdout + check.stderr
    assert "runs sum to 1000000000, not height x width = 2304" in check.stdout + check.stderr
    fit = run_vistra("fit", "--config", CONFIGS / "detr/shapes.yaml",
                     *shapes_data_args(shapes, "instances"), "--trainer.max_steps=1",
                     cwd=tmp_path)  # fmt: skip
    assert fit.returncode != 0 and "Traceback" not in fit.stderr  # the checker's short report
    assert "segmentation.counts: runs sum to 1000000000" in fit.stderr
    assert not list(tmp_path.rglob("*.ckpt"))
    # Mask2Former reads such a file only through pycocotools, after a whole validation pass
    val = shapes / "annotations/instances_val.json"
    data = json.loads(val.read_text())
    data["annotations"][0]["segmentation"] = {"size": [48, 48], "counts": [0, 10**9]}
    val.write_text(json.dumps(data))
    fit = run_vistra("fit", "--config", CONFIGS / "mask2former/shapes.yaml",
                     *shapes_data_args(shapes, "panoptic"), "--trainer.max_steps=1",
                     cwd=tmp_path)  # fmt: skip
    assert fit.returncode != 0 and "Traceback" not in fit.stderr, fit.stderr[-2000:]
    assert f"{val}: 1 problem(s)" in fit.stderr and "runs sum to 1000000000" in fit.stderr


def test_a_panoptic_segment_listed_twice_is_refused_by_fit(shapes, tmp_path):
    annotations = shapes / "annotations/panoptic_train.json"
    data = json.loads(annotations.read_text())
    entry = data["annotations"][0]
    entry["segments_info"].append(dict(entry["segments_info"][0]))
    annotations.write_text(json.dumps(data))
    before = files_under(tmp_path)
    fit = run_vistra("fit", "--config", CONFIGS / "mask2former/shapes.yaml",
                     *shapes_data_args(shapes, "panoptic"), "--trainer.max_steps=1",
                     cwd=tmp_path)  # fmt: skip
    assert files_under(tmp_path) == before  # refused before a run folder was made
    line = one_line(fit)
    assert "segments_info[" in line and "is listed twice" in line, line


def test_symlink_loops_are_searched_once(tmp_path):
    """A link to a parent folder made 3 images 123 and two of them never ended the walk."""
    from vistra.data.sources.unlabelled_folder import UnlabelledFolderSource

    (tmp_path / "photos/a").mkdir(parents=True)
    for name in ("photos/one.png", "photos/a/two.png", "photos/a/three.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    (tmp_path / "photos/a/up").symlink_to("..")
    (tmp_path / "photos/a/again").symlink_to("../a")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = UnlabelledFolderSource(tmp_path / "photos")
    assert len(source) == 3
    (message,) = [str(w.message) for w in caught]
    assert "(and 1 more) leads to a folder already searched" in message
    # class folders: the same files in torchvision's order, and a loop searched once
    from torchvision.datasets.folder import make_dataset

    from vistra.data.sources.image_folder import ImageFolderSource

    classes = tmp_path / "classes"
    for name in ("cat/a-x/1.png", "cat/a/2.png", "cat/0.png", "dog/b.png"):
        (classes / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(classes / name)
    reference = make_dataset(str(classes), {"cat": 0, "dog": 1}, extensions=(".png",))
    assert list(zip(ImageFolderSource(classes).items, ImageFolderSource(classes).labels)) == (
        reference)  # fmt: skip
    (classes / "cat/a/loop").symlink_to("..")  # back to cat/
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(ImageFolderSource(classes)) == 4
    assert "leads to a folder already searched" in str(caught[0].message)


SUPCON = [
    "fit", "--config", CONFIGS / "supcon/resnet18_digits.yaml", "--data.init_args.image_size=16",
    "--model.init_args.network.init_args.hidden_dim=64", "--trainer.enable_progress_bar=false",
]  # fmt: skip


def test_one_run_one_writer(tmp_path):
    """A run resumed while its first process still trains is refused in one line naming the
    holder; once the holder is killed (its lock and a half-written checkpoint left), the next
    resume takes the run over, says so, and removes the leftover."""
    plan = [*SUPCON, "--trainer.max_epochs=40", "--trainer.max_steps=400",
            "--checkpoint.every_n_train_steps=2"]  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-m", "vistra.cli", *map(str, plan)], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    run = tmp_path / "vistra_runs/supcon_digits/lightning_logs/version_0"
    lock, last = run / "vistra.lock", run / "checkpoints/last.ckpt"
    try:
        end = time.monotonic() + 120
        while not (last.exists() and lock.exists() and f'"pid": {holder.pid}' in lock.read_text()):
            assert time.monotonic() < end and holder.poll() is None, "the holder never locked"
            time.sleep(0.2)
        second = run_vistra(*plan, "--ckpt_path", "last", cwd=tmp_path)
        line = one_line(second)
        assert f"is in use by another vistra fit (process {holder.pid} on" in line, line
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    leftover = run / "checkpoints" / f".last.ckpt.{holder.pid}.tmp"
    leftover.write_bytes(b"half a checkpoint")
    # the same plan, stopped by a time limit (which does not change the schedule)
    third = run_vistra(*plan, "--ckpt_path", "last", "--trainer.max_time=00:00:00:02",
                       cwd=tmp_path)  # fmt: skip
    assert third.returncode == 0, third.stderr[-2000:]
    assert f"was left by process {holder.pid}, which has ended: taking the run over" in (
        third.stderr)  # fmt: skip
    # this one, and any the kill itself left
    assert re.search(r"removed \d+ temporary checkpoint file\(s\)", third.stderr), third.stderr
    assert not list(run.rglob("*.tmp")) and not lock.exists()


def test_a_full_disk_names_itself_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """The disk fills up at the second checkpoint (``torch.save`` fails as the system would)."""
    saves: list = []

    def save(obj, path, *args, **kwargs):
        if Path(path).name.startswith(".last.ckpt"):
            saves.append(path)
        if len(saves) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(obj, path, *args, **kwargs)

    original = torch.save
    monkeypatch.setattr(torch, "save", save)
    run = run_vistra(*SUPCON, "--trainer.max_steps=4", "--checkpoint.every_n_train_steps=2",
                     cwd=tmp_path)  # fmt: skip
    line = one_line(run)
    assert "cannot write the checkpoint: no space left on device; the previous last.ckpt is " \
           "intact" in line, line  # fmt: skip
    (last,) = tmp_path.rglob("last.ckpt")
    assert torch.load(last, weights_only=False)["global_step"] == 2
    assert not list(tmp_path.rglob("*.tmp"))


def _restored(source: Path, target: Path, **network_changes) -> Path:
    """The checkpoint with a stored ``network`` hyper-parameter (Lightning merges it over the
    config's): the one it was trained with, changed."""
    from vistra.inference.checkpoint import NETWORK_KEY

    checkpoint = torch.load(source, weights_only=True)
    network = checkpoint[NETWORK_KEY]
    network["init_args"].update(network_changes)
    checkpoint["hyper_parameters"]["network"] = network
    torch.save(checkpoint, target)
    return target


@pytest.mark.parametrize("case", ["stored width", "another size on the command line"])
def test_network_arguments_that_do_not_make_the_weights_stop_in_one_line(
    case, family_data, trained, tmp_path
):
    """A stored width of 2^20 (gigabytes of weights) or a command line asking another size
    than the checkpoint's: one line naming the first tensor, before anything is allocated."""
    config, args, _ = family_args(family_data, "detr")
    ckpt = trained("detr")
    folder, before = ckpt.parent, files_under(ckpt.parent)
    extra = []
    if case == "stored width":
        ckpt = _restored(ckpt, tmp_path / "wide.ckpt", hidden_dim=2**20)
    else:
        extra = ["--model.init_args.network.init_args.num_queries=7"]
    run = run_vistra("validate", "--config", config, *args, *extra, "--ckpt_path", ckpt,
                     "--trainer.enable_progress_bar=false", cwd=tmp_path)  # fmt: skip
    line = one_line(run)
    assert "its network arguments make" in line and "but its weights hold" in line, line
    assert files_under(folder) == before and set(files_under(tmp_path)) <= {"wide.ckpt"}


def test_predict_reads_no_file_a_checkpoint_names_and_checks_its_sizes(trained, tmp_path):
    from vistra.inference.checkpoint import NETWORK_KEY

    checkpoint = torch.load(trained("detr"), weights_only=True)
    checkpoint[NETWORK_KEY]["init_args"]["checkpoint"] = str(tmp_path / "secret.pth")
    torch.save(checkpoint, tmp_path / "names_a_file.ckpt")
    Image.new("RGB", (64, 48)).save(tmp_path / "photo.png")
    photo = tmp_path / "photo.png"
    run = run_vistra("predict", "--ckpt", tmp_path / "names_a_file.ckpt", "--input", photo,
                     "--output", tmp_path / "out", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]  # the stored file option is left out
    checkpoint[NETWORK_KEY]["init_args"]["hidden_dim"] = 2**20
    torch.save(checkpoint, tmp_path / "wide.ckpt")
    run = run_vistra("predict", "--ckpt", tmp_path / "wide.ckpt", "--input", photo,
                     "--output", tmp_path / "out2", cwd=tmp_path)  # fmt: skip
    assert "its network arguments make" in one_line(run)


@pytest.mark.parametrize("kind", ["truncated", "TorchScript"])
def test_a_ckpt_path_that_is_no_checkpoint_is_named(kind, family_data, trained, tmp_path):
    config, args, _ = family_args(family_data, "detr")
    path = tmp_path / "broken.ckpt"
    if kind == "truncated":
        data = trained("detr").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    run = run_vistra("validate", "--config", config, *args, "--ckpt_path", path,
                     "--trainer.enable_progress_bar=false", cwd=tmp_path)  # fmt: skip
    line = one_line(run)
    assert f"--ckpt_path {path}" in line, line


def test_extending_a_finished_run_equals_one_run_or_is_refused(family_data, tmp_path):
    """``--ckpt_path last --trainer.max_steps 6`` after a 3-step run ends where one 6-step run
    ends (DETR with the paper's step schedule, which does not follow the run's length; the
    3-step run stopped mid-epoch); with a cosine schedule planned for 3 steps it is refused."""
    config, args, _ = family_args(family_data, "detr")
    step = [*args, "--model.init_args.schedule=step", "--trainer.enable_progress_bar=false"]
    (tmp_path / "two").mkdir()
    (tmp_path / "one").mkdir()
    (tmp_path / "cosine").mkdir()
    for folder, steps in (("two", 3), ("two", 6), ("one", 6)):
        resume = ["--ckpt_path", "last"] if (folder, steps) == ("two", 6) else []
        run = run_vistra("fit", "--config", config, *step, f"--trainer.max_steps={steps}",
                         *resume, cwd=tmp_path / folder)  # fmt: skip
        assert run.returncode == 0, run.stderr[-2000:]
    extended, single = (torch.load(next((tmp_path / f).rglob("last.ckpt")), weights_only=False)
                        for f in ("two", "one"))  # fmt: skip
    assert (extended["global_step"], extended["epoch"]) == (single["global_step"], single["epoch"])
    for name, value in single["state_dict"].items():
        assert torch.equal(extended["state_dict"][name], value), name
    again = run_vistra("fit", "--config", config, *args, "--trainer.max_steps=3",
                       "--trainer.enable_progress_bar=false", cwd=tmp_path / "cosine")  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    longer = run_vistra("fit", "--config", config, *args, "--trainer.max_steps=6", "--ckpt_path",
                        "last", cwd=tmp_path / "cosine")  # fmt: skip
    assert "schedule was planned for 3 steps, and continuing it to 6 cannot" in one_line(longer)


def test_every_run_logs_its_loss_each_epoch_and_at_its_last_step(tmp_path):
    """13 steps of 11 per epoch at Lightning's default cadence of 50: no row at all before."""
    run = run_vistra(*SUPCON, "--trainer.max_epochs=5", "--trainer.max_steps=13",
                     "--trainer.log_every_n_steps=50", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    (metrics,) = tmp_path.rglob("metrics.csv")
    rows = [line.split(",")[:2] for line in metrics.read_text().splitlines()[1:]]
    assert rows == [["0", "10"], ["1", "12"]], rows
