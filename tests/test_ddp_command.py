"""Two processes through the command (CPU, gloo): DETR trains under plain DDP, and evaluation
on an odd number of images gives exactly the single-process numbers (no image counted twice)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from command import shapes_data_args
from runner import run_vistra

from vistra.data.shapes import write_shapes

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TWO_PROCESSES = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]
ONE_PROCESS = ["--trainer.devices=1", "--trainer.accelerator=cpu"]


def vistra(*args, cwd) -> str:
    result = run_vistra(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp") / "shapes"
    write_shapes(root, 8, 3, 64, seed=1)  # 3 held-out images: one rank gets 2, the other 1
    return root


def table(stdout: str, starts: tuple[str, ...]) -> list[str]:
    lines = [line for line in stdout.splitlines() if line.strip().startswith(starts)]
    assert lines, stdout[-2000:]
    return lines


def validated_twice(config: Path, data_args: list[str], fit_devices: list[str], folder: Path):
    """Fit 2 steps, then ``vistra validate`` the checkpoint on 1 and on 2 processes."""
    vistra("fit", "--config", config, *data_args, *fit_devices, "--trainer.max_steps=2",
           cwd=folder)  # fmt: skip
    checkpoint = next(folder.rglob("last.ckpt"))
    return [vistra("validate", "--config", config, *data_args, *devices, "--ckpt_path",
                   checkpoint, cwd=folder)
            for devices in (ONE_PROCESS, TWO_PROCESSES)]  # fmt: skip


def test_detr_trains_under_ddp_and_its_ap_counts_each_image_once(shapes, tmp_path):
    config = CONFIGS / "detr/shapes.yaml"
    single, double = validated_twice(
        config, shapes_data_args(shapes, "instances"), TWO_PROCESSES, tmp_path
    )
    assert "(3 images)" in single and "(3 images)" in double
    assert table(double, ("Average",)) == table(single, ("Average",))
    # Every query of every image once (10 queries x 3 images), the same in both runs.
    written = [json.loads(path.read_text()) for path in sorted(tmp_path.rglob("val_epoch_*.json"))]
    assert len(written) == 2 and [len(results) for results in written] == [30, 30]
    # The same detections; a batch of 1 and a batch of 2 may round the fifth decimal apart.
    one, two = (sorted(results, key=lambda r: (r["image_id"], -r["score"])) for results in written)
    assert [(r["image_id"], r["category_id"]) for r in one] == [
        (r["image_id"], r["category_id"]) for r in two
    ]
    for first, second in zip(one, two):
        assert first["score"] == pytest.approx(second["score"], abs=1e-4)
        assert first["bbox"] == pytest.approx(second["bbox"], abs=0.02)


def test_mask2former_pq_miou_and_mask_ap_count_each_image_once(shapes, tmp_path):
    config = CONFIGS / "mask2former/shapes.yaml"
    single, double = validated_twice(
        config, shapes_data_args(shapes, "panoptic"), ONE_PROCESS, tmp_path
    )
    rows = ("All", "Things", "Stuff", "semantic:", "Average")
    assert table(double, rows) == table(single, rows)
