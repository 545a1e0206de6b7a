"""The ONNX file people ship (README "The ONNX file"): `vistra export`'s defaults give one
file of any batch and size; `vistra predict --ckpt model.onnx` gives the checkpoint's results
on a folder of mixed sizes; a client written from the README alone gives `vistra predict`'s
results; and the ONNX route runs where torch is not installed."""

from __future__ import annotations

import json
import re
import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest
from deploy_files import build_checkpoints, write_scenes
from PIL import Image
from runner import run_vistra

pytest.importorskip("onnxruntime")

MIXED = [(96, 120), (110, 80), (64, 64), (150, 100), (90, 130)]  # (height, width)
KINDS = ("detection", "segmentation", "classification")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Checkpoints, their exports by the README's `vistra export` line, the images. The DETR
    has ViTDet's backbone: its windows (padded at 96 pixels) and its position table resized per
    input grid must trace for any size too."""
    root = tmp_path_factory.mktemp("contract")
    checkpoints = build_checkpoints(root / "ckpt")
    found = {"images": write_scenes(root / "images", MIXED)}
    for kind in KINDS:
        out = root / kind
        out.mkdir()
        checkpoint = checkpoints["detection_vit" if kind == "detection" else kind]
        run = run_vistra("export", "--ckpt", checkpoint, "--output", out / "model.onnx",
                         cwd=root)  # fmt: skip
        assert run.returncode == 0, run.stderr[-2000:]
        assert [p.name for p in out.iterdir()] == ["model.onnx"]  # one file: weights inside
        if kind != "classification":  # two image sizes through one file, against PyTorch
            assert re.search(r"checked at \d+x\d+, \d+x\d+;", run.stdout), run.stdout
        found[kind], found[f"{kind}.ckpt"] = out / "model.onnx", checkpoint
    return found


def predict(model: Path, files: dict, out: Path, *extra) -> Path:
    run = run_vistra("predict", "--ckpt", model, "--input", files["images"], "--output", out,
                     "--batch-size", "4", *extra, cwd=out.parent)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    return out


def _semantic(folder: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(folder / "semantic" / f"{name}.png"))


@pytest.mark.parametrize("kind", ["detection", "segmentation"])
def test_the_default_export_predicts_a_mixed_folder_like_the_checkpoint(kind, files, tmp_path):
    from_onnx = predict(files[kind], files, tmp_path / "onnx")
    from_ckpt = predict(files[f"{kind}.ckpt"], files, tmp_path / "ckpt")
    if kind == "detection":
        ours = json.loads((from_onnx / "detections.json").read_text())
        reference = json.loads((from_ckpt / "detections.json").read_text())
        assert len(ours) == len(reference) == 5 * len(MIXED)
        for a, b in zip(ours, reference):
            assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
            assert abs(a["score"] - b["score"]) <= 1e-4
            assert np.abs(np.subtract(a["bbox"], b["bbox"])).max() <= 0.1
        return
    for index, (height, width) in enumerate(MIXED):
        a, b = _semantic(from_onnx, f"scene{index}"), _semantic(from_ckpt, f"scene{index}")
        assert a.shape == (height, width) and (a == b).mean() >= 0.999
    ours = json.loads((from_onnx / "panoptic.json").read_text())["annotations"]
    reference = json.loads((from_ckpt / "panoptic.json").read_text())["annotations"]
    for a, b in zip(ours, reference):
        labels = [s["category_id"] for s in a["segments_info"]]
        assert labels == [s["category_id"] for s in b["segments_info"]]


@pytest.mark.parametrize("kind", KINDS)
def test_a_client_written_from_the_readme_matches_vistra_predict(kind, files, tmp_path):
    from onnx_client import Client

    out = predict(files[kind], files, tmp_path / "out")
    client = Client(files[kind])
    pictures = [Image.open(files["images"] / f"scene{i}.png") for i in range(len(MIXED))]
    results = client(pictures[:4]) + client(pictures[4:])  # vistra predict's batches of 4
    if kind == "classification":
        rows = (out / "classes.csv").read_text().splitlines()[1:]
        for row, result in zip(rows, results):
            _, label, _, score = row.split(",")
            assert int(label) == result["label"]
            assert abs(float(score) - result["scores"][result["label"]]) <= 1e-4
    elif kind == "detection":
        written = json.loads((out / "detections.json").read_text())
        for image_id, result in enumerate(results, start=1):
            mine = [d for d in written if d["image_id"] == image_id]
            np.testing.assert_allclose([d["score"] for d in mine], result["scores"], atol=1e-4)
            x0, y0, x1, y1 = result["boxes"].T
            boxes = np.stack([x0, y0, x1 - x0, y1 - y0], 1)
            assert np.abs(np.array([d["bbox"] for d in mine]) - boxes).max() <= 0.1
    else:
        from pycocotools import mask as mask_utils

        instances = json.loads((out / "instances.json").read_text())
        for image_id, result in enumerate(results, start=1):
            assert np.array_equal(_semantic(out, f"scene{image_id - 1}"), result["semantic"])
            mine = [d for d in instances if d["image_id"] == image_id]
            np.testing.assert_allclose([d["score"] for d in mine], result["instances"]["scores"],
                                       atol=1e-4)  # fmt: skip
            masks = mask_utils.decode([d["segmentation"] for d in mine]).transpose(2, 0, 1)
            assert np.array_equal(masks.astype(bool), result["instances"]["masks"])


def torch_free_python(folder: Path) -> Path:
    """A virtual environment holding onnxruntime, numpy, Pillow, tqdm and vistra's source, and
    not torch: a bare venv whose site-packages links to those packages of this one."""
    venv.EnvBuilder(with_pip=False).create(folder)
    site = next(folder.glob("lib/python*/site-packages"))
    ours = Path(np.__file__).parents[1]
    links = folder / "links"
    links.mkdir()
    for name in ("numpy", "numpy.libs", "onnxruntime", "PIL", "pillow.libs", "tqdm",
                 "flatbuffers", "packaging", "google", "sympy", "mpmath"):  # fmt: skip
        if (ours / name).exists():
            (links / name).symlink_to(ours / name)
    source = Path(__file__).resolve().parents[1] / "src"
    (site / "links.pth").write_text(f"{links}\n{source}\n")
    return folder / "bin" / "python"


def test_the_onnx_route_runs_without_torch(files, tmp_path):
    python = torch_free_python(tmp_path / "env")
    missing = subprocess.run([python, "-c", "import torch"], capture_output=True, text=True)
    assert missing.returncode != 0 and "No module named 'torch'" in missing.stderr
    segmenter, image = files["segmentation"], files["images"] / "scene1.png"
    words = ["predict", "--ckpt", str(files["detection"]), "--input", str(files["images"]),
             "--output", str(tmp_path / "out"), "--batch-size", "4"]  # fmt: skip
    code = ("import sys\n"
            "from vistra.cli import main\n"
            "from vistra import Predictor\n"
            f"result = Predictor.from_onnx({str(segmenter)!r})({str(image)!r})\n"
            "assert result.semantic.shape == (110, 80), result.semantic.shape\n"
            "try:\n"
            f"    main({words!r})\n"
            "except SystemExit as end:\n"
            "    assert end.code in (0, None), end.code\n"
            "print('torch' in sys.modules, 'torchvision' in sys.modules)\n")  # fmt: skip
    run = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "False False"
    reference = predict(files["detection"], files, tmp_path / "with_torch")
    assert (tmp_path / "out" / "detections.json").read_text() == (
        reference / "detections.json").read_text()  # fmt: skip


def test_a_fixed_size_export_fits_images_or_refuses_them(files, tmp_path):
    run = run_vistra("export", "--ckpt", files["detection.ckpt"], "--output", "fixed.onnx",
                     "--static", "--height", "96", "--width", "128", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "fixed.onnx"))
    assert session.get_inputs()[0].shape == [1, 3, 96, 128]
    landscape = write_scenes(tmp_path / "landscape", [(96, 120), (60, 90), (80, 128)])
    run = run_vistra("predict", "--ckpt", "fixed.onnx", "--input", landscape, "--output", "a",
                     cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(json.loads((tmp_path / "a" / "detections.json").read_text())) == 3 * 5
    run = run_vistra("predict", "--ckpt", "fixed.onnx", "--input", files["images"], "--output",
                     "b", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "does not fit this ONNX file's fixed input 96x128" in run.stderr


def test_numpy_decoding_equals_the_torch_post_processing():
    """The ONNX route's decoding (numpy) against the checkpoint route's (torch), on the same
    raw outputs: a padded batch of two sizes, things and stuff, a segment of a stuff class."""
    import torch

    from vistra.data.preprocess import Preprocess
    from vistra.inference.decode import decode
    from vistra.inference.postprocess import to_results
    from vistra.inference.spec import InferenceSpec, Thresholds

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 8, 6, generator=generator) * 4
    masks = torch.randn(2, 8, 24, 32, generator=generator) * 3
    spec = InferenceSpec("segmentation", Preprocess("shorter_side", 96, 128), list("abcde"),
                         [1, 2, 3, 7, 9], [0, 1, 2], Thresholds(0.3, 0.5, 10))  # fmt: skip
    sizes = dict(padded_size=(96, 128), input_sizes=[(96, 128), (80, 100)],
                 output_sizes=[(120, 160), (70, 90)])  # fmt: skip
    raw = {"pred_logits": logits, "pred_masks": masks}
    reference = to_results(raw, spec, **sizes)
    ours = decode({k: v.numpy() for k, v in raw.items()}, spec, **sizes)
    # Float rounding of the two resizes (one matrix product here, two passes in PyTorch) may
    # turn a mask logit within about 1e-5 of 0: a few pixels in a thousand at most.
    for a, b in zip(reference, ours):
        assert (a.semantic.numpy() == b.semantic).mean() >= 0.999
        assert (a.instances["masks"].numpy() == b.instances["masks"]).mean() >= 0.999
        assert np.array_equal(a.instances["labels"].numpy(), b.instances["labels"])
        np.testing.assert_allclose(b.instances["scores"], a.instances["scores"], atol=1e-4)
        assert (a.panoptic.numpy() == b.panoptic).mean() >= 0.999 and b.segments
        assert [(s["id"], s["label"]) for s in a.segments] == [
            (s["id"], s["label"]) for s in b.segments]  # fmt: skip
    detr = InferenceSpec("detection", Preprocess("shorter_side", 96, 128), list("abc"))
    raw = {"pred_logits": torch.randn(2, 5, 4, generator=generator),
           "pred_boxes": torch.rand(2, 5, 4, generator=generator)}  # fmt: skip
    sizes["output_sizes"] = [(120, 160), (70, 90)]
    for a, b in zip(to_results(raw, detr, **sizes),
                    decode({k: v.numpy() for k, v in raw.items()}, detr, **sizes)):  # fmt: skip
        np.testing.assert_allclose(b.boxes, a.boxes.numpy(), atol=1e-4)
        np.testing.assert_allclose(b.scores, a.scores.numpy(), atol=1e-6)
        assert np.array_equal(a.labels.numpy(), b.labels) and a.names == b.names


def test_vistra_serve_runs_the_onnx_file(files, tmp_path):
    """README: `vistra serve --ckpt model.onnx` answers as `vistra predict --ckpt model.onnx`
    on the same image (each image alone: `--batch-size 1`)."""
    from serve_process import serving

    image = files["images"] / "scene1.png"
    run = run_vistra("predict", "--ckpt", files["detection"], "--input", image, "--output",
                     tmp_path / "out", "--batch-size", "1", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    written = json.loads((tmp_path / "out" / "detections.json").read_text())
    with serving(files["detection"], tmp_path) as server:
        status, body = server.call("/predict", image.read_bytes(), "image/png")
    assert status == 200, body
    served = [{k: v for k, v in row.items() if k != "category_name"} for row in body["detections"]]
    expected = [{k: v for k, v in row.items() if k != "image_id"} for row in written]
    assert served == sorted(expected, key=lambda row: -row["score"])
