"""Predictor, `vistra predict --ckpt`, `vistra export`: every family, checkpoint and ONNX."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from deploy_files import build_checkpoints
from PIL import Image
from runner import run_vistra

from vistra.data.shapes import render_scene
from vistra.inference.export import export
from vistra.inference.predictor import Predictor
from vistra.inference.results import Detections, Segmentation

pytest.importorskip("onnxruntime")


def vistra(*args, cwd):
    return run_vistra(*args, cwd=cwd)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    return build_checkpoints(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for index, size in enumerate((96, 120)):
        scene = render_scene(np.random.default_rng(index), size, 3)["image"]
        Image.fromarray(scene).save(folder / f"scene{index}.png")
    return folder


def test_predictor_types_inputs_and_original_sizes(checkpoints, images):
    detector = Predictor.from_checkpoint(checkpoints["detection"])
    files = sorted(images.glob("*.png"))
    array = np.array(Image.open(files[1]))
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    results = detector([files[1], Image.open(files[1]), array, tensor])
    assert all(isinstance(r, Detections) for r in results)
    for other in results[1:]:  # four kinds of the same image give the same detections
        torch.testing.assert_close(other.boxes, results[0].boxes)
    assert results[0].boxes[:, 2:].max() <= 120 + 1e-3 and set(results[0].names) <= {
        "circle", "square", "triangle"}  # fmt: skip
    segmenter = Predictor.from_checkpoint(checkpoints["segmentation"])
    result = segmenter(files[1])
    assert isinstance(result, Segmentation) and result.semantic.shape == (120, 120)
    assert result.instances["masks"].shape[-2:] == (120, 120)
    embedder = Predictor.from_checkpoint(checkpoints["embedding"])
    features = embedder.embed(files)
    assert features.shape == (2, embedder.network.num_features)
    torch.testing.assert_close(embedder.embed(files), features)  # deterministic
    classifier = Predictor.from_checkpoint(checkpoints["classification"])
    scores = classifier(files[0])
    assert scores.scores.shape == (10,) and abs(float(scores.scores.sum()) - 1) < 1e-5


# DETR (with ViTDet's backbone), Mask2Former and a classifier export through the README's own
# `vistra export` (tests/test_onnx_contract.py, tests/test_readme.py).
def test_onnx_export_of_an_embedding_model_agrees_with_pytorch(checkpoints, images, tmp_path):
    predictor = Predictor.from_checkpoint(checkpoints["embedding"])
    files = sorted(images.glob("*.png"))
    report = export(predictor, tmp_path / "embedding.onnx", files[0], "onnx")
    assert report.max_rel <= 1e-4
    exported = Predictor.from_onnx(tmp_path / "embedding.onnx")(files)
    for a, b in zip(predictor(files), exported):  # numpy arrays from the ONNX route
        np.testing.assert_allclose(b, a.numpy(), atol=1e-4, rtol=1e-4)


def test_exported_program_round_trip(checkpoints, images, tmp_path):
    predictor = Predictor.from_checkpoint(checkpoints["detection"])
    report = export(predictor, tmp_path / "detr.pt2", next(images.glob("*.png")),
                    "exported-program", dynamic=True, check_sizes=[(64, 80)])  # fmt: skip
    assert report.max_rel <= 1e-4 and (tmp_path / "detr.pt2").is_file()


def test_predict_command_writes_files_per_task_and_skips_a_bad_image(checkpoints, images,
                                                                     tmp_path):  # fmt: skip
    folder = tmp_path / "in"
    folder.mkdir()
    for file in images.glob("*.png"):
        (folder / file.name).write_bytes(file.read_bytes())
    (folder / "broken.png").write_bytes(b"not a png")
    run = vistra("predict", "--ckpt", checkpoints["segmentation"], "--input", folder,
                 "--output", tmp_path / "seg", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "broken.png" in run.stderr and "2 images, 1 skipped" in run.stdout
    panoptic = json.loads((tmp_path / "seg" / "panoptic.json").read_text())["annotations"]
    from vistra.data.sources.coco_panoptic import decode_segment_ids

    for entry in panoptic:
        ids = decode_segment_ids(tmp_path / "seg" / "panoptic" / entry["file_name"])
        assert set(np.unique(ids).tolist()) - {0} == {s["id"] for s in entry["segments_info"]}
    assert len(list((tmp_path / "seg" / "semantic").glob("*.png"))) == 2
    assert len(list((tmp_path / "seg" / "pictures").glob("*.png"))) == 2
    assert isinstance(json.loads((tmp_path / "seg" / "instances.json").read_text()), list)

    pattern = str(folder / "scene*.png")
    run = vistra("predict", "--ckpt", checkpoints["detection"], "--input", pattern,
                 "--output", tmp_path / "det", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    detections = json.loads((tmp_path / "det" / "detections.json").read_text())
    assert {d["image_id"] for d in detections} == {1, 2} and len(detections) == 10
    from pycocotools.coco import COCO

    truth = COCO()
    truth.dataset = {"images": json.loads((tmp_path / "det" / "images.json").read_text()),
                     "annotations": [], "categories": [{"id": i} for i in (1, 2, 3)]}  # fmt: skip
    truth.createIndex()
    assert len(truth.loadRes(detections).getAnnIds()) == 10
    for kind, written in (("embedding", "embeddings.npy"), ("classification", "classes.csv")):
        run = vistra("predict", "--ckpt", checkpoints[kind], "--input", folder,
                     "--output", tmp_path / kind, cwd=tmp_path)  # fmt: skip
        assert run.returncode == 0, run.stderr[-2000:]
        assert (tmp_path / kind / written).is_file()
    assert np.load(tmp_path / "embedding" / "embeddings.npy").shape[0] == 2
    assert len((tmp_path / "classification" / "classes.csv").read_text().splitlines()) == 3


def test_bad_inputs_get_clear_messages(checkpoints, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    run = vistra("predict", "--ckpt", checkpoints["detection"], "--input", empty,
                 "--output", tmp_path / "out", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 2 and "no images" in run.stderr and "Traceback" not in run.stderr
    torch.save({"model": {}}, tmp_path / "other.ckpt")
    run = vistra("predict", "--ckpt", tmp_path / "other.ckpt", "--input", empty,
                 "--output", tmp_path / "out", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 2 and "not a vistra checkpoint" in run.stderr
    run = vistra("export", "--ckpt", tmp_path / "missing.ckpt", "--output", tmp_path / "m.onnx",
                 cwd=tmp_path)  # fmt: skip
    assert run.returncode == 2 and "missing.ckpt: checkpoint not found" in run.stderr
    with pytest.raises(ValueError, match="embed\\(\\) is for"):
        Predictor.from_checkpoint(checkpoints["detection"]).embed(np.zeros((8, 8, 3), np.uint8))


def test_export_command_writes_and_checks(checkpoints, tmp_path):
    run = vistra("export", "--ckpt", checkpoints["embedding"], "--format", "onnx",
                 "--output", tmp_path / "supcon.onnx", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "max |difference|" in run.stdout and (tmp_path / "supcon.onnx").is_file()


def test_preprocess_keeps_the_aspect_ratio_within_the_limits():
    from vistra.data.preprocess import Preprocess

    spec = Preprocess("shorter_side", 64, 96, mean=(0.0,) * 3, std=(1.0,) * 3)
    assert spec(Image.new("RGB", (128, 64))).shape == (3, 48, 96)  # longer side capped
    assert spec(Image.new("RGB", (80, 40))).shape == (3, 48, 96)
    square = Preprocess("shorter_side", 64, 64)  # max_size == size: fit in a 64 x 64 square
    assert square(Image.new("RGB", (100, 60))).shape == (3, 38, 64)
    assert Preprocess("center_crop", 32)(Image.new("RGB", (50, 50))).shape == (3, 32, 32)
    assert Preprocess.from_dict(spec.to_dict()) == spec


def test_mae_checkpoint_predicts_embeddings_and_reconstruction_grids(checkpoints, images,
                                                                      tmp_path):  # fmt: skip
    run = vistra("predict", "--ckpt", checkpoints["mae"], "--input", images,
                 "--output", tmp_path / "mae", "--batch-size", "1", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert np.load(tmp_path / "mae" / "embeddings.npy").shape == (2, 192)
    grid = Image.open(tmp_path / "mae" / "reconstructions.png")
    assert grid.width > grid.height  # 4 columns (original, masked, reconstruction, pasted)


def test_bf16_autocast_predictor_agrees_with_float32(checkpoints, images):
    files = sorted(images.glob("*.png"))
    exact = Predictor.from_checkpoint(checkpoints["embedding"]).embed(files)
    fast = Predictor.from_checkpoint(checkpoints["embedding"], precision="bf16").embed(files)
    assert fast.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(exact, fast)
    assert (cosine > 0.99).all()


def test_inference_modules_import_no_lightning(checkpoints, images):
    """Every inference module, and a checkpoint's predictor run, without Lightning (the ONNX
    route without torch at all: tests/test_onnx_contract.py)."""
    image = next(images.glob("*.png"))
    code = ("import importlib, pkgutil, sys\n"
            "import vistra.inference as package\n"
            "for found in pkgutil.iter_modules(package.__path__):\n"
            "    importlib.import_module(f'vistra.inference.{found.name}')\n"
            "from vistra.inference import Predictor\n"
            f"result = Predictor.from_checkpoint(r'{checkpoints['detection']}')(r'{image}')\n"
            "assert len(result.scores) == 5, result\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', "
            "'pytorch_lightning', 'lightning_fabric')))\n")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"
