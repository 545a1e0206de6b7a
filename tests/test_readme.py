"""The README is the test: every command block of "Quick start" and "Train on your own data"
and every Python block of "In Python" runs, in order, in one working folder, as a user would
run them after putting their files where the README says.

Documented substitutions, and nothing else:
- the user's files are the built-in data, laid out at the README's paths: the shapes set in
  COCO formats at ``data/mine``, digits as an unlabelled folder tree at ``data/photos`` and as
  class folders (named ``zero`` ... ``nine``) at ``data/labelled/{train,val}``; ``street.jpg``,
  ``a.jpg``, ``b.jpg`` are shapes images;
- weight files the Python examples load are written in the original repositories' layouts
  (``original_layouts``, random values at the published sizes);
- ``vistra fit|validate|predict --config`` commands get ``SHRINK``: 2 steps of 2 images at
  32-64 pixels, no loader workers, and the small networks of the README's "Smaller networks"
  keys (ResNet-18, a 2-block ViT-Tiny, narrow transformers); a resumed fit gets 2 more steps;
- ``make demo`` runs as ``vistra demo`` with 2 training steps; ``make test`` is this suite.
"""

from __future__ import annotations

import csv
import pickle
import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from command import NET, SMALL
from runner import Ran, run_script, run_vistra

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
COMMON = ["--trainer.max_steps=2", "--trainer.limit_val_batches=2",
          "--data.init_args.num_workers=0", "--data.init_args.batch_size=2"]  # fmt: skip
AT_64 = ["--data.init_args.eval_size=64", "--data.init_args.eval_max_size=128"]
AT_32 = ["--data.init_args.image_size=32"]
VIT_AT_32 = f"{NET}image_size=32"
SHRINK = {
    "configs/detr/custom_coco.yaml": [*AT_64, "--data.init_args.scales=[64]",
                                      "--data.init_args.max_size=128",
                                      "--data.init_args.crop=null", *SMALL["detr"]],
    "configs/mask2former/custom_panoptic.yaml": [*AT_64, "--data.init_args.size=64",
                                                 *SMALL["mask2former"]],
    "configs/mask2former/custom_semantic.yaml": [*AT_64, "--data.init_args.size=64",
                                                 *SMALL["mask2former"]],
    "configs/mask2former/custom_panoptic_pretrained.yaml": [
        *AT_64, "--data.init_args.size=64", *SMALL["vit_backbone"],
        *[a for a in SMALL["mask2former"] if "backbone=" not in a]],
    "configs/detr/custom_coco_pretrained.yaml": [*AT_64, "--data.init_args.scales=[64]",
                                                 "--data.init_args.max_size=128",
                                                 "--data.init_args.crop=null", *SMALL["detr"]],
    "configs/mae/custom_pretrain.yaml": [*AT_32, VIT_AT_32, *SMALL["mae"]],
    "configs/mae/custom_finetune.yaml": [*AT_32, VIT_AT_32, *SMALL["vit"]],
    "configs/supcon/custom_supcon.yaml": [*AT_32, *SMALL["supcon"]],
    "configs/supcon/custom_linear.yaml": AT_32,
}  # fmt: skip


def section(name: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {name}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def commands(text: str) -> list[list[str]]:
    """Each command line of the bash blocks, comments removed, continuation lines joined."""
    found = []
    for block in code_blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                found.append(words)
    return found


def shrunk(words: list[str]) -> list[str]:
    """A README command as the test runs it (see the module docstring)."""
    if words[:2] == ["make", "demo"]:
        return ["vistra", "demo", "--trainer.max_steps=2"]
    if words[0] != "vistra" or "--config" not in words:
        return words
    config = words[words.index("--config") + 1]
    extra = [*COMMON, *SHRINK[config]]
    if words[1] == "fit" and "--ckpt_path" in words:
        extra[0] = "--trainer.max_steps=4"
    return [*words, *extra]


def run(words: list[str], cwd: Path) -> Ran:
    assert words[0] == "vistra", words
    result = run_vistra(*words[1:], cwd=cwd)
    assert result.returncode == 0, f"{shlex.join(words)}\n{result.stderr[-3000:]}"
    return result


def lay_out_user_files(folder: Path) -> None:
    from PIL import Image

    from vistra.data import DigitsSource
    from vistra.data.shapes import write_shapes

    write_shapes(folder / "data/mine", 8, 4, 64, seed=0)
    for split, per_class in (("train", 3), ("val", 1)):
        counts = [0] * 10
        for image, label in DigitsSource(split, image_size=32):
            if counts[label] < per_class:
                target = folder / "data/labelled" / split / DIGIT_NAMES[label]
                target.mkdir(parents=True, exist_ok=True)
                image.save(target / f"{counts[label]}.png")
                counts[label] += 1
    for index, (image, _) in enumerate(DigitsSource("val", image_size=32)):
        if index == 12:
            break
        nested = folder / "data/photos" / f"camera{index % 2}" / f"day{index % 3}"
        nested.mkdir(parents=True, exist_ok=True)
        image.save(nested / f"{index}.png")
    shape = Image.open(min((folder / "data/mine/images/val").iterdir())).convert("RGB")
    for name in ("street.jpg", "a.jpg", "b.jpg"):
        shape.save(folder / name)


def write_example_weights(folder: Path) -> None:
    """The files the Python examples load, in the original repositories' layouts at the
    published sizes (``original_layouts``, the converter tests' independent trees): MAE's
    encoder-only ``mae_pretrain_vit_base.pth``, DETR's ``detr-r50-*.pth`` (91 classes),
    Mask2Former's detectron2 ``model_final.pkl`` (R50, 133 classes)."""
    from original_layouts import (
        detectron2_resnet50,
        original_detr,
        original_mae,
        original_mask2former_heads,
    )

    mae, _ = original_mae(224, 16, 768, 12, 12, decoder_width=512, decoder_depth=8,
                          decoder_heads=16)  # fmt: skip
    encoder = {k: v for k, v in mae.state_dict().items() if not k.startswith(("decoder", "mask"))}
    torch.save({"model": encoder}, folder / "mae_pretrain_vit_base.pth")
    detr = original_detr(256, 8, 2048, 100, 91, encoder_layers=6, decoder_layers=6)
    torch.save({"model": detr.state_dict()}, folder / "detr-r50-e632da11.pth")
    backbone, _ = detectron2_resnet50()
    heads = original_mask2former_heads(256, 100, 133, layers=9, pixel_layers=6, pixel_ffn=1024,
                                       ffn=2048)  # fmt: skip
    arrays = {k: v.numpy() for k, v in {**backbone, **heads.state_dict()}.items()}
    with open(folder / "model_final.pkl", "wb") as file:
        pickle.dump({"model": arrays, "__author__": "Detectron2 Model Zoo"}, file)


@pytest.fixture(scope="module")
def user_folder(request, tmp_path_factory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("user")
    (folder / "configs").symlink_to(ROOT / "configs")
    lay_out_user_files(folder)
    failures_before = request.session.testsfailed
    yield folder
    # Its full-size checkpoints take gigabytes, and pytest would keep a module folder until the
    # session ends: gone with the module, unless a test failed (as pytest keeps a failed test's).
    if request.session.testsfailed == failures_before:
        shutil.rmtree(folder, ignore_errors=True)


def test_quick_start_commands_run(user_folder):
    found = commands(section("Quick start"))
    assert [words[:2] for words in found] == [["make", "demo"], ["make", "test"]]
    # Through the installed script, in a process of its own: the suite's end-to-end run of
    # `vistra demo` (test_cli runs the other subcommands so).
    done = run_script(*shrunk(found[0])[1:], cwd=user_folder)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout
    assert "Mask2Former on shapes" in output and (user_folder / "vistra_runs").is_dir()


def test_own_data_commands_run_in_order(user_folder):
    found = commands(section("Train on your own data"))
    assert len(found) >= 12
    outputs = [run(shrunk(words), user_folder) for words in found]

    detr_run = user_folder / "vistra_runs/detr_custom/lightning_logs/version_0"
    assert (detr_run / "checkpoints/last.ckpt").is_file()
    resumed = next(r for w, r in zip(found, outputs) if "--ckpt_path" in w and w[1] == "fit")
    assert f"resuming from {Path('vistra_runs/detr_custom/lightning_logs/version_0')}" in (
        resumed.stderr
    )
    steps = [int(row["step"]) for row in csv.DictReader((detr_run / "metrics.csv").open())]
    assert max(steps) >= 3  # the resumed run's steps were appended to the same run's log

    classes = list(csv.DictReader((user_folder / "predictions/classes/classes.csv").open()))
    assert classes and {row["name"] for row in classes} <= set(DIGIT_NAMES)
    probe = list(csv.DictReader((user_folder / "predictions/probe/classes.csv").open()))
    assert probe and {row["name"] for row in probe} <= set(DIGIT_NAMES)
    assert (user_folder / "predictions/detr/detections.json").is_file()
    on_val = user_folder / "predictions/detr_val"
    assert {p.name for p in on_val.iterdir()} == {p.name for p in (user_folder /
                                                  "predictions/detr").iterdir()}  # fmt: skip
    assert (user_folder / "detr.onnx").is_file()
    detr_predict = next(r for w, r in zip(found, outputs) if "predictions/detr" in w)
    assert "have no box drawn; lower --threshold" in detr_predict.stderr  # 4 steps: all low
    assert list((user_folder / "predictions/panoptic").rglob("*.png"))


def test_python_examples_run(user_folder):
    # The examples read the DETR and SupCon runs only; the others go before the full-size
    # weight files are written, which keeps the suite's disk near a gigabyte.
    for run in ("mask2former_custom", "mask2former_semantic_custom", "linear_custom",
                "demo_mask2former"):  # fmt: skip
        shutil.rmtree(user_folder / "vistra_runs" / run)
    write_example_weights(user_folder)
    blocks = code_blocks(section("In Python"), "python")
    assert len(blocks) == 5
    for block in blocks:
        namespace: dict = {}
        exec_in(user_folder, block, namespace)
        if "loss" in namespace:
            assert torch.isfinite(namespace["loss"]), block.splitlines()[0]
    assert namespace["features"].shape[0] == 2  # the last block: embeddings of a.jpg, b.jpg


def exec_in(folder: Path, code: str, namespace: dict) -> None:
    import os

    before = os.getcwd()
    os.chdir(folder)
    try:
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's code
    finally:
        os.chdir(before)
