"""Hostile and broken inputs, second round (issue 28), the files' side: exported files whose
metadata lies or points outside their folder, export paths and tolerances that cannot work,
devices the machine lacks, annotation files in other encodings or nested too deep, options
Lightning refuses, a preprocessing entry that divides by zero, file names that are not UTF-8.
Each gives its one line (or, for the names, every result), exit code and no traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from deploy_files import build_checkpoints, write_scenes
from runner import run_vistra
from unchanged import files_under

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("hostile_files")
    return {"ckpt": build_checkpoints(root / "ckpt"), "images": write_scenes(root / "img",
            [(48, 64)])}  # fmt: skip


def refused(run, code: int = 2) -> str:
    lines = run.stderr.strip().splitlines()
    assert run.returncode == code and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert len(lines) == 1, run.stderr[-3000:]
    return lines[0]


def embedding_graph(path: Path, metadata: str, external: str | None = None) -> Path:
    """An ONNX graph with an embedding's input and output (``images`` -> ``features``), its
    ``vistra`` metadata ``metadata``; ``external``: its one weight stored in that file."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(torch.ones(3).numpy(), "scale")
    if external:
        weight.data_location = TensorProto.EXTERNAL
        weight.ClearField("raw_data")
        entry = weight.external_data.add()
        entry.key, entry.value = "location", external
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images"], ["pooled"], axes=[2, 3], keepdims=0),
         helper.make_node("Mul", ["pooled", "scale"], ["features"])],
        "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["b", 3, "h", "w"])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["b", 3])], [weight],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.metadata_props.add(key="vistra", value=metadata)
    onnx.save(model, path)
    return path


SPEC = {"kind": "embedding", "preprocess": {"resize": "center_crop", "size": 32}}


@pytest.mark.parametrize(
    "case,words",
    [("another kind", "its metadata says detection but the graph takes ['images'] and gives "
      "['features']"),
     ("garbage", "unusable 'vistra' metadata"),
     ("data outside", "not a usable ONNX file"),
     ("an exported program", "an exported program (.pt2) is for torch.export.load")],
)  # fmt: skip
def test_exported_files_that_lie_are_refused(case, words, files, tmp_path):
    pytest.importorskip("onnxruntime")
    model = tmp_path / "model.onnx"
    if case == "another kind":
        embedding_graph(model, json.dumps({**SPEC, "kind": "detection"}))
    elif case == "garbage":
        embedding_graph(model, "{not json")
    elif case == "data outside":
        (tmp_path / "secret.bin").write_bytes(b"\0" * 12)
        (tmp_path / "inside").mkdir()
        model = embedding_graph(tmp_path / "inside/model.onnx", json.dumps(SPEC), "../secret.bin")
    else:
        model = tmp_path / "model.pt2"
        model.write_bytes(b"PK")
    before = files_under(tmp_path)
    run = run_vistra("predict", "--ckpt", model, "--input", files["images"], "--output",
                     tmp_path / "out", cwd=tmp_path)  # fmt: skip
    line = refused(run)
    assert words in line and str(model) in line, line
    assert files_under(tmp_path, (tmp_path / "out",)) == before
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    "extra,words",
    [(["--output", "/etc/hostname/model.onnx"], "cannot create its folder"),
     (["--output", "model.pt2"], "an onnx file is named *.onnx"),
     (["--output", "model.onnx", "--format", "exported-program"],
      "an exported-program file is named *.pt2"),
     (["--output", "model.onnx", "--tolerance", "nan"], "tolerance must be a positive number")],
)  # fmt: skip
def test_export_paths_and_tolerances_that_cannot_work(extra, words, files, tmp_path):
    run = run_vistra("export", "--ckpt", files["ckpt"]["embedding"], *extra, cwd=tmp_path)
    assert words in refused(run)
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:3", "gpu0"])
def test_a_device_the_machine_lacks_is_named(device, files, tmp_path):
    run = run_vistra("predict", "--ckpt", files["ckpt"]["detection"], "--input", files["images"],
                     "--output", tmp_path / "out", "--device", device, cwd=tmp_path)  # fmt: skip
    assert f"device {device!r}: " in refused(run)
    assert files_under(tmp_path, (tmp_path / "out",)) == {}


@pytest.mark.parametrize("case", ["UTF-16", "nested"])
def test_annotation_files_in_other_encodings_or_nested_too_deep(case, tmp_path):
    path = tmp_path / "instances.json"
    if case == "UTF-16":
        path.write_text(json.dumps({"images": [], "annotations": [], "categories": []}),
                        encoding="utf-16")  # fmt: skip
        words = "UTF-16 text; save it as UTF-8"
    else:
        path.write_text("[" * 100_000 + "]" * 100_000)
        words = "JSON nested too deeply"
    before = files_under(tmp_path)
    run = run_vistra("data", "check", path, cwd=tmp_path)
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert words in run.stdout + run.stderr
    assert files_under(tmp_path) == before


def test_an_option_lightning_refuses_is_one_line(tmp_path):
    run = run_vistra("fit", "--config", CONFIGS / "supcon/resnet18_digits.yaml",
                     "--data.init_args.image_size=16", "--trainer.val_check_interval=100000",
                     "--trainer.max_steps=2", "--trainer.enable_progress_bar=false",
                     cwd=tmp_path)  # fmt: skip
    last = run.stderr.strip().splitlines()[-1]
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert last.startswith("vistra: `val_check_interval` (100000) must be less than"), last


def test_a_backbone_file_with_a_broken_header_is_one_line(tmp_path):
    broken = tmp_path / "encoder.safetensors"
    broken.write_bytes(b"\xff" * 7 + b"\x7f{}")  # a header length of 2^63
    from command import shapes_data_args

    from vistra.data.shapes import write_shapes

    write_shapes(tmp_path / "shapes", train=2, val=1, size=32, seed=0)
    run = run_vistra("fit", "--config", CONFIGS / "detr/shapes.yaml",
                     *shapes_data_args(tmp_path / "shapes", "instances"),
                     f"--model.init_args.network.init_args.backbone_checkpoint={broken}",
                     "--trainer.max_steps=1", cwd=tmp_path)  # fmt: skip
    last = run.stderr.strip().splitlines()[-1]
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert last.startswith(f"vistra: {broken}: cannot read") and "header" in last, last


@pytest.mark.parametrize("change", [{"std": [0.0, 0.2, 0.2]}, {"size": 100_000}])
def test_a_preprocessing_entry_that_cannot_work_is_named(change, files, tmp_path):
    """A stored std of 0 would divide every pixel by zero; a size of 100000 asks 120 GB."""
    checkpoint = torch.load(files["ckpt"]["embedding"], weights_only=True)
    checkpoint["vistra_preprocess"].update(change)
    torch.save(checkpoint, tmp_path / "bad.ckpt")
    before = files_under(tmp_path)
    run = run_vistra("predict", "--ckpt", tmp_path / "bad.ckpt", "--input", files["images"],
                     "--output", tmp_path / "out", cwd=tmp_path)  # fmt: skip
    assert files_under(tmp_path, (tmp_path / "out",)) == before
    line = refused(run)
    assert "unusable inference entry" in line and list(change)[0] in line, line


@pytest.mark.parametrize("family", ["classification", "embedding"])
def test_file_names_that_are_not_utf8_keep_every_result(family, files, tmp_path):
    """Inference ran, then the writer failed on the name and left the results file empty."""
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 30)).save(photos / "ok.png")
    Image.new("RGB", (40, 30), (200, 0, 0)).save(os.fsdecode(os.fsencode(photos) + b"/\xff.png"))
    run = run_vistra("predict", "--ckpt", files["ckpt"][family], "--input", photos, "--output",
                     tmp_path / "out", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    listing = "classes.csv" if family == "classification" else "embeddings.txt"
    written = (tmp_path / "out" / listing).read_bytes()
    assert b"\xff.png" in written and b"ok.png" in written  # the file system's own bytes


def test_a_result_file_that_cannot_be_written_loses_no_other_result(files, tmp_path):
    """Two inputs that differ by suffix only keep it in their output names: at the file
    system's 255-byte limit, their pictures cannot be written; every detection row still is."""
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    stem = "x" * 251
    for suffix in (".jpg", ".png"):
        Image.new("RGB", (40, 30)).save(photos / f"{stem}{suffix}")
    Image.new("RGB", (40, 30)).save(photos / "short.png")
    run = run_vistra("predict", "--ckpt", files["ckpt"]["detection"], "--input", photos,
                     "--output", tmp_path / "out", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stderr.count("a file of its results could not be written") == 2, run.stderr
    rows = json.loads((tmp_path / "out/detections.json").read_text())
    assert sorted({row["image_id"] for row in rows}) == [1, 2, 3]
    assert [p.name for p in (tmp_path / "out/pictures").iterdir()] == ["short.png"]


def test_a_run_folder_that_cannot_be_written_is_one_line(tmp_path):
    """The tests run as root, for whom permissions do not stop a write: /proc refuses every
    new folder, as a read-only disk does."""
    run = run_vistra("fit", "--config", CONFIGS / "supcon/resnet18_digits.yaml",
                     "--data.init_args.image_size=16", "--trainer.max_steps=1",
                     "--trainer.default_root_dir=/proc/vistra_run", cwd=tmp_path)  # fmt: skip
    last = run.stderr.strip().splitlines()[-1]
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert last.startswith("vistra: /proc/vistra_run: "), last
