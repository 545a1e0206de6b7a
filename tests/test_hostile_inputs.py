"""Hostile and broken inputs, second round (issue 28, the cases done so far): FIFOs and
decompression bombs among the photos, an output folder inside the input folder, class names
that break CSV rows or run as spreadsheet formulas, COCO's "no such objects" logged as NaN."""

from __future__ import annotations

import csv
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from deploy_files import SQUARE, build_checkpoints, save_checkpoint, write_scenes
from families import family_args
from runner import run_vistra

from vistra.models import MaskedAutoencoder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    return build_checkpoints(tmp_path_factory.mktemp("hostile"))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG of a signature, a header chunk claiming ``width x height`` RGB and an end chunk:
    69 bytes, no pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def bmp_claiming(width: int, height: int) -> bytes:
    """A BMP file and info header claiming ``width x height`` at 24 bits, no pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def test_a_fifo_among_the_photos_is_skipped_not_waited_on(checkpoints, tmp_path):
    """A FIFO named like an image would block the first read forever: a real process, with a
    time limit, must finish and name it."""
    photos = write_scenes(tmp_path / "photos", [(64, 80)])
    os.mkfifo(photos / "b.png")
    words = ["predict", "--ckpt", checkpoints["detection"], "--input", photos, "--output",
             tmp_path / "out"]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "vistra.cli", *map(str, words)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"skipped {photos / 'b.png'}: not a regular file" in done.stderr
    assert "1 images, 0 skipped" in done.stdout


def test_decompression_bombs_are_skipped_with_one_line_each(checkpoints, tmp_path):
    photos = write_scenes(tmp_path / "photos", [(64, 80)])
    (photos / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
    (photos / "bomb.bmp").write_bytes(bmp_claiming(30_000, 30_000))
    run = run_vistra("predict", "--ckpt", checkpoints["detection"], "--input", photos,
                     "--output", tmp_path / "out", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert "1 images, 2 skipped" in run.stdout
    for name in ("bomb.png", "bomb.bmp"):
        (line,) = [text for text in run.stderr.splitlines() if name in text]
        assert "over the limit of 178956970 pixels" in line and "VISTRA_MAX_IMAGE_PIXELS" in line
    # The limit is an option: at 4000 pixels the 64 x 80 scene is refused too.
    run = run_vistra("predict", "--ckpt", checkpoints["detection"], "--input", photos,
                     "--output", tmp_path / "small", cwd=tmp_path,
                     env={"VISTRA_MAX_IMAGE_PIXELS": "4000"})  # fmt: skip
    assert run.returncode == 2 and "no readable image" in run.stderr
    assert "80 x 64, over the limit of 4000 pixels" in run.stderr


@pytest.mark.parametrize("inside", [".", "results"])
def test_an_output_folder_in_the_input_folder_is_refused(inside, checkpoints, tmp_path):
    photos = write_scenes(tmp_path / "photos", [(64, 80), (64, 64)])
    before = sorted(p.relative_to(photos) for p in photos.rglob("*"))
    run = run_vistra("predict", "--ckpt", checkpoints["detection"], "--input", photos,
                     "--output", photos / inside, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "is inside --input" in run.stderr
    assert sorted(p.relative_to(photos) for p in photos.rglob("*")) == before


def test_class_names_stay_in_their_csv_cells_and_never_run_as_formulas(tmp_path):
    torch.manual_seed(0)
    mae = MaskedAutoencoder(size="tiny", image_size=32, patch_size=8, decoder_width=64,
                            decoder_depth=1, decoder_heads=2, depth=1)  # fmt: skip
    names = ["cat,dog", 'say "hi"', "evil\nrow", '=HYPERLINK("http://x","y")', "+1", "-2",
             "@SUM(A1)", "plain", "\ttab", "=1+1"]  # fmt: skip
    probe = {"head.1.weight": torch.randn(10, 192), "head.1.bias": torch.zeros(10)}
    checkpoint = save_checkpoint(tmp_path / "probe.ckpt", mae, SQUARE, {"names": names}, probe)
    photos = write_scenes(tmp_path / "photos", [(32, 32)] * 6)
    (photos / "=cmd.png").write_bytes((photos / "scene0.png").read_bytes())
    run = run_vistra("predict", "--ckpt", checkpoint, "--input", photos, "--output", "out",
                     cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    with open(tmp_path / "out/classes.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["file", "label", "name", "score"] and len(rows) == 8
    shown = {("'" + n if n[0] in "=+-@\t" else n) for n in names}
    for file_name, label, name, _ in rows[1:]:
        assert name in shown
        assert name.lstrip("'") == names[int(label)]
        assert not file_name.startswith(("=", "+", "-", "@")) and not name.startswith("=")
    assert "'=cmd.png" in [row[0] for row in rows]


def test_coco_no_such_objects_is_logged_as_nan(family_data, trained, tmp_path):
    """The shapes' 64-pixel scenes hold no large object: COCOeval's APl is -1, which the
    README says is logged as NaN (0 would read as a detector that finds none)."""
    config, args, _ = family_args(family_data, "detr")
    run = run_vistra("validate", "--config", config, *args, "--ckpt_path", trained("detr"),
                     "--trainer.enable_progress_bar=false", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    (row,) = [line for line in run.stdout.splitlines() if "val/APl " in line]
    assert "nan" in row.lower()
    (metrics,) = tmp_path.rglob("metrics.csv")
    with open(metrics, newline="") as file:
        values = [r["val/APl"] for r in csv.DictReader(file) if r.get("val/APl")]
    assert values and all(v.lower() == "nan" for v in values)


def _hostile_checkpoint(source: Path, target: Path, change: str) -> Path:
    """A trained DETR's checkpoint whose task hyper-parameters gained a ``network`` entry (the
    task's network argument, which Lightning merges over the config's)."""
    checkpoint = torch.load(source, weights_only=True)
    if change == "a module's class":  # importing `this` runs code (it prints)
        network = {"class_path": "this.Zen", "init_args": {}}
    elif change == "a dotted name":
        network = "torch.nn.Linear"
    else:
        network = {"class_path": "vistra.models.DETR", "init_args": {"checkpoint": "/etc/passwd"}}
    checkpoint["hyper_parameters"]["network"] = network
    torch.save(checkpoint, target)
    return target


@pytest.mark.parametrize("change", ["a module's class", "a dotted name", "a file to read"])
def test_a_checkpoints_hyper_parameters_choose_no_code_and_no_file(change, family_data, trained,
                                                                   tmp_path):  # fmt: skip
    """``--ckpt_path`` brings the task's stored hyper-parameters back over the config: a class
    outside vistra's is refused before it is imported; a stored file option is not read."""
    config, args, _ = family_args(family_data, "detr")
    hostile = _hostile_checkpoint(trained("detr"), tmp_path / "hostile.ckpt", change)
    run = run_vistra("validate", "--config", config, *args, "--ckpt_path", hostile,
                     "--trainer.enable_progress_bar=false", cwd=tmp_path)  # fmt: skip
    assert "this" not in sys.modules and "Beautiful is better" not in run.stdout
    assert "Traceback" not in run.stderr and "/etc/passwd" not in run.stderr
    if change == "a file to read":
        assert run.returncode == 0, run.stderr[-2000:]  # validated from its own weights
        return
    assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "not one of vistra's classes; a checkpoint cannot choose what code runs" in run.stderr


@pytest.fixture
def traversal(tmp_path) -> dict[str, Path]:
    """A shapes set whose first training image is named ``../../victim/photo.png`` (a file that
    exists there, so only the name can refuse it) and whose second has an absolute name."""
    import json

    from vistra.data.shapes import write_shapes

    root = tmp_path / "shapes"
    write_shapes(root, train=3, val=2, size=32, seed=0)
    victim = tmp_path / "victim" / "photo.png"
    victim.parent.mkdir()
    victim.write_bytes((root / "images/train").joinpath(sorted(
        p.name for p in (root / "images/train").iterdir())[0]).read_bytes())  # fmt: skip
    annotations = root / "annotations/instances_train.json"
    data = json.loads(annotations.read_text())
    data["images"][0]["file_name"] = "../../victim/photo.png"
    data["images"][1]["file_name"] = str(victim)
    annotations.write_text(json.dumps(data))
    return {"root": root, "annotations": annotations, "victim": victim}


def test_file_names_that_leave_the_image_folder_are_refused(traversal, tmp_path):
    root, annotations, victim = traversal["root"], traversal["annotations"], traversal["victim"]
    images, before = root / "images/train", victim.read_bytes()
    check = run_vistra("data", "check", annotations, "--images", images, cwd=tmp_path)
    assert check.returncode != 0 and "Traceback" not in check.stderr
    report = check.stdout + check.stderr
    assert "images[0]" in report and "leaves the image folder" in report
    assert "images[1]" in report and "is an absolute path" in report
    shard = run_vistra("data", "shard", annotations, "--images", images, tmp_path / "shards",
                       cwd=tmp_path)  # fmt: skip
    assert shard.returncode == 2 and len(shard.stderr.strip().splitlines()) == 1
    assert "images[].file_name '../../victim/photo.png' leaves the image folder" in shard.stderr
    assert not (tmp_path / "shards").exists()  # refused before anything was written
    config = Path(__file__).resolve().parents[1] / "configs/detr/shapes.yaml"
    from command import shapes_data_args

    fit = run_vistra("fit", "--config", config, *shapes_data_args(root, "instances"),
                     "--trainer.max_steps=1", cwd=tmp_path)  # fmt: skip
    assert fit.returncode != 0 and "Traceback" not in fit.stderr
    assert "leaves the image folder" in fit.stderr and not list(tmp_path.rglob("*.ckpt"))
    assert victim.read_bytes() == before
