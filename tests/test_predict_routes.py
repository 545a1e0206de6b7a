"""Both forms of ``vistra predict`` write the same files for the same checkpoint.

For one checkpoint per family, trained by ``vistra fit`` on a folder or COCO files (the
session's ``trained`` models on ``family_data``): ``vistra predict --config ... --ckpt_path``
(Lightning, the config's held-out data) and ``vistra predict --ckpt ... --input <the same
images>`` (no Lightning) must give the same set of files, JSON / CSV / text byte-identical, PNG
pixels and ``.npy`` arrays equal. The batch size is the same in both (the data module's,
``--batch-size``), so every forward sees the same batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from families import BATCH, FAMILIES, family_args
from PIL import Image
from runner import run_vistra


def vistra(*args, cwd: Path) -> str:
    result = run_vistra(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def assert_same_files(ours: Path, theirs: Path) -> list[str]:
    """Every file of one folder equals the other's (PNG: pixels; .npy: arrays; others: bytes)."""
    files = sorted(p.relative_to(ours).as_posix() for p in ours.rglob("*") if p.is_file())
    other = sorted(p.relative_to(theirs).as_posix() for p in theirs.rglob("*") if p.is_file())
    assert files == other
    for name in files:
        a, b = ours / name, theirs / name
        if name.endswith(".png"):
            assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b))), name
        elif name.endswith(".npy"):
            assert np.array_equal(np.load(a), np.load(b)), name
        else:
            assert a.read_bytes() == b.read_bytes(), name
    return files


EXPECTED = {
    "detr": {"detections.json", "images.json"},
    "mask2former": {"panoptic.json", "instances.json", "images.json"},
    "mae": {"embeddings.npy", "embeddings.txt", "images.json", "reconstructions.png"},
    "supcon": {"embeddings.npy", "embeddings.txt", "images.json"},
}


@pytest.mark.parametrize("family", FAMILIES)
def test_both_predict_commands_write_the_same_files(family, family_data, trained, tmp_path):
    config, args, held_out = family_args(family_data, family)
    checkpoint = trained(family)
    vistra("predict", "--config", config, *args, "--ckpt_path", checkpoint,
           "--trainer.enable_progress_bar=false", "--predictions.output", "from_config",
           cwd=tmp_path)  # fmt: skip
    vistra("predict", "--ckpt", checkpoint, "--input", held_out, "--output", "from_checkpoint",
           "--batch-size", BATCH, cwd=tmp_path)  # fmt: skip
    files = assert_same_files(tmp_path / "from_config", tmp_path / "from_checkpoint")
    assert EXPECTED[family] <= set(files)
    images = json.loads((tmp_path / "from_config/images.json").read_text())
    assert len(images) == 5
    results = tmp_path / "from_config"
    if family == "detr":  # every query of every image (not an empty run that agrees)
        assert len(json.loads((results / "detections.json").read_text())) == 5 * 10
    if family == "mask2former":  # the thing classes reached inference: panoptic and instances
        panoptic = json.loads((results / "panoptic.json").read_text())["annotations"]
        assert len(panoptic) == 5 and json.loads((results / "instances.json").read_text())


def test_a_model_option_on_the_command_line_wins_over_the_checkpoints(
    family_data, trained, tmp_path
):
    """``--ckpt_path`` brings the trained task's hyper-parameters; an inference option given
    on the command line (here ``top_k``) must still be the one used, not silently replaced."""
    from collections import Counter

    config, args, _ = family_args(family_data, "mask2former")
    checkpoint = trained("mask2former")
    per_image = {}
    for top_k in (100, 2):
        out = f"top{top_k}"
        vistra("predict", "--config", config, *args, "--ckpt_path", checkpoint,
               f"--model.init_args.top_k={top_k}", "--trainer.enable_progress_bar=false",
               "--predictions.output", out, cwd=tmp_path)  # fmt: skip
        instances = json.loads((tmp_path / out / "instances.json").read_text())
        per_image[top_k] = Counter(result["image_id"] for result in instances)
    assert max(per_image[100].values()) > 2  # 8 queries: more than 2 kept by default
    assert max(per_image[2].values()) == 2
