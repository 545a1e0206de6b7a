"""Beyond one machine, on this one (CPU, gloo): ``vistra fit`` / ``validate`` launched by
``torchrun`` as two "nodes" of two processes, by ``torchrun`` with three processes, and as the
four tasks ``srun`` starts (its environment variables set by hand). Training runs at world size
4 (SLURM here; torchrun in ``test_first_step.py``), and evaluation over 7 held-out images (not
a multiple of 3 or 4) gives exactly the single-process COCO AP, PQ / mIoU / mask AP and kNN
top-1: no image counted twice, none left out."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from command import shapes_data_args
from runner import run_vistra

from vistra.data.shapes import write_shapes

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CPU = ["--trainer.accelerator=cpu", "--trainer.strategy=ddp"]
ONE_PROCESS = ["--trainer.accelerator=cpu", "--trainer.devices=1"]
TWO_NODES = [*CPU, "--trainer.num_nodes=2", "--trainer.devices=2"]
THREE_PROCESSES = [*CPU, "--trainer.num_nodes=1", "--trainer.devices=3"]
HELD_OUT = 7


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def finish(processes: list[subprocess.Popen]) -> str:
    """Wait for every process; all must succeed. Returns rank 0's output."""
    outputs = [process.communicate(timeout=900) for process in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    return outputs[0][0] + outputs[0][1]


def vistra(*args, cwd: Path) -> str:
    """One process (``runner``; a multi-device run starts as its own process there)."""
    result = run_vistra(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def torchrun(*args, cwd: Path, nodes: int, per_node: int) -> str:
    """``torchrun --nnodes N --node_rank k ...`` once per node, a static rendezvous on this
    machine, each starting ``per_node`` processes of ``vistra``."""
    port = free_port()
    processes = [
        subprocess.Popen([sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}",
                          f"--nproc_per_node={per_node}", f"--node_rank={node}",
                          "--master_addr=127.0.0.1", f"--master_port={port}",
                          "-m", "vistra.cli", *map(str, args)],
                         cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for node in range(nodes)
    ]  # fmt: skip
    return finish(processes)


def slurm_tasks(*args, cwd: Path, nodes: int = 2, per_node: int = 2) -> str:
    """The processes ``srun`` starts for ``--nodes N --ntasks-per-node M``, with the variables it
    sets (Lightning's ``SLURMEnvironment`` reads them)."""
    common = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "vistra", "SLURM_NNODES": str(nodes),
              "SLURM_NTASKS": str(nodes * per_node), "SLURM_NTASKS_PER_NODE": str(per_node),
              "SLURM_NODELIST": "127.0.0.1", "MASTER_PORT": str(free_port())}  # fmt: skip
    processes = []
    for rank in range(nodes * per_node):
        place = {"SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank % per_node),
                 "SLURM_NODEID": str(rank // per_node)}  # fmt: skip
        env = {**os.environ, **common, **place}
        processes.append(subprocess.Popen([sys.executable, "-m", "vistra.cli", *map(str, args)],
                                          cwd=cwd, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))  # fmt: skip
    return finish(processes)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cluster") / "shapes"
    write_shapes(root, 8, HELD_OUT, 64, seed=2)
    return root


def lines(output: str, starts: tuple[str, ...]) -> list[str]:
    """The metric rows (Lightning's "All distributed processes registered" is not one)."""
    found = [line.strip() for line in output.splitlines()
             if line.strip().startswith(starts) and "processes" not in line]  # fmt: skip
    assert found, output[-2000:]
    return found


def test_detr_on_two_torchrun_nodes_evaluates_each_image_once(shapes, tmp_path):
    """(Training under torchrun on 2 "nodes" x 2 processes: ``test_first_step.py``.)"""
    config, data = CONFIGS / "detr/shapes.yaml", shapes_data_args(shapes, "instances")
    vistra("fit", "--config", config, *data, *ONE_PROCESS, "--trainer.max_steps=2", cwd=tmp_path)
    (checkpoint,) = tmp_path.rglob("last.ckpt")
    validate = ["validate", "--config", config, *data, "--ckpt_path", checkpoint]
    single = vistra(*validate, *ONE_PROCESS, cwd=tmp_path)
    four = torchrun(*validate, *TWO_NODES, cwd=tmp_path, nodes=2, per_node=2)
    three = torchrun(*validate, *THREE_PROCESSES, cwd=tmp_path, nodes=1, per_node=3)
    for output in (single, four, three):
        assert f"({HELD_OUT} images)" in output
    assert lines(four, ("Average",)) == lines(single, ("Average",))
    assert lines(three, ("Average",)) == lines(single, ("Average",))
    # Every query of every image once (10 queries x 7 images) in the COCO results each
    # validation wrote, the same detections at every world size (batches of other sizes may
    # round the fifth decimal apart).
    versions = sorted(tmp_path.rglob("val_epoch_*.json"), key=lambda p: run_version(p))
    one, *others = [json.loads(path.read_text()) for path in versions[-3:]]  # the validations
    expected = sorted(one, key=lambda r: (r["image_id"], -r["score"]))
    assert len(one) == 10 * HELD_OUT
    for results in others:
        got = sorted(results, key=lambda r: (r["image_id"], -r["score"]))
        assert [(r["image_id"], r["category_id"]) for r in got] == [
            (r["image_id"], r["category_id"]) for r in expected
        ]
        for mine, theirs in zip(got, expected):
            assert mine["score"] == pytest.approx(theirs["score"], abs=1e-4)
            assert mine["bbox"] == pytest.approx(theirs["bbox"], abs=0.02)


def run_version(path: Path) -> int:
    """N of the ``version_N`` run folder a file is in."""
    return next(int(part.split("_")[1]) for part in path.parts if part.startswith("version_"))


def validated_on_one_and_three(config: Path, data: list[str], folder: Path) -> tuple[str, str]:
    """Fit 2 steps on one process, then ``vistra validate`` the checkpoint on one process and
    on three (torchrun): both outputs."""
    vistra("fit", "--config", config, *data, *ONE_PROCESS, "--trainer.max_steps=2",
           "--trainer.limit_val_batches=0", cwd=folder)  # fmt: skip
    (checkpoint,) = folder.rglob("last.ckpt")
    validate = ["validate", "--config", config, *data, "--ckpt_path", checkpoint]
    single = vistra(*validate, *ONE_PROCESS, cwd=folder)
    return single, torchrun(*validate, *THREE_PROCESSES, cwd=folder, nodes=1, per_node=3)


def test_mask2former_pq_miou_and_mask_ap_at_world_size_3(shapes, tmp_path):
    config, data = CONFIGS / "mask2former/shapes.yaml", shapes_data_args(shapes, "panoptic")
    single, three = validated_on_one_and_three(config, data, tmp_path)
    rows = ("All", "Things", "Stuff", "semantic:", "Average")
    assert lines(three, rows) == lines(single, rows)


def metric(output: str, name: str) -> float:
    match = re.search(name + r"\D*?([0-9.]+)", output)
    assert match, output[-2000:]
    return float(match.group(1))


def digit_folders(root: Path, size: int) -> list[str]:
    """40 training and 7 held-out digits as class folders -> the data arguments."""
    from vistra.data import DigitsSource

    for split, count in (("train", 40), ("val", HELD_OUT)):
        for index, (image, label) in enumerate(DigitsSource(split, image_size=size)):
            if index == count:
                break
            folder = root / "digits" / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"{index}.png")
    return [f'--data.init_args.{split}={{"class_path": "vistra.data.ImageFolderSource", '
            f'"init_args": {{"root": "{root / "digits" / split}"}}}}'
            for split in ("train", "val")]  # fmt: skip


def test_supcon_under_slurm_trains_and_its_knn_monitor_counts_each_image_once(tmp_path):
    data = digit_folders(tmp_path, 16)
    config = CONFIGS / "supcon/resnet18_digits.yaml"
    small = [*data, "--data.init_args.image_size=16", "--data.init_args.batch_size=4",
             "--model.init_args.network.init_args.hidden_dim=64"]  # fmt: skip
    trained = slurm_tasks("fit", "--config", config, *small, *TWO_NODES, "--trainer.max_steps=2",
                          "--trainer.limit_val_batches=0", cwd=tmp_path)  # fmt: skip
    assert "last checkpoint:" in trained
    (checkpoint,) = tmp_path.rglob("last.ckpt")
    validate = ["validate", "--config", config, *small, "--ckpt_path", checkpoint]
    single = vistra(*validate, *ONE_PROCESS, cwd=tmp_path)
    four = slurm_tasks(*validate, *TWO_NODES, cwd=tmp_path)
    three = torchrun(*validate, *THREE_PROCESSES, cwd=tmp_path, nodes=1, per_node=3)
    assert metric(four, "val/knn_top1") == metric(single, "val/knn_top1")
    assert metric(three, "val/knn_top1") == metric(single, "val/knn_top1")


def test_classifier_top1_at_world_size_3(tmp_path):
    config = CONFIGS / "mae/finetune_digits.yaml"
    data = [*digit_folders(tmp_path, 32), "--data.init_args.batch_size=4"]
    single, three = validated_on_one_and_three(config, data, tmp_path)
    for name in ("val/top1", "val/loss"):
        assert metric(three, name) == pytest.approx(metric(single, name), abs=1e-6), name


def test_mae_fully_sharded_matches_ddp_and_its_checkpoint_predicts_without_it(tmp_path):
    """``--trainer.strategy fsdp_blocks`` (FSDP2: one shard unit per ViT block) with activation
    checkpointing, 2 processes: after 2 AdamW steps the weights equal plain DDP's (to 1e-5; a
    step moves every weight by about the learning rate, 3.75e-4 here), and the whole-file
    checkpoint runs in ``vistra predict --ckpt`` without the strategy."""
    from vistra.data import DigitsSource

    config = CONFIGS / "mae/vit_tiny_digits.yaml"
    common = ["--trainer.max_steps=2", "--trainer.limit_val_batches=0", "--trainer.devices=2",
              "--trainer.accelerator=cpu", "--model.init_args.warmup_epochs=0",
              "--data.init_args.batch_size=16"]  # fmt: skip
    runs = {}
    for strategy, extra in (("fsdp_blocks", ["--model.init_args.network.init_args."
                                             "grad_checkpointing=true"]), ("ddp", [])):  # fmt: skip
        folder = tmp_path / strategy
        folder.mkdir()
        vistra("fit", "--config", config, *common, f"--trainer.strategy={strategy}", *extra,
               cwd=folder)  # fmt: skip
        (runs[strategy],) = folder.rglob("last.ckpt")
    sharded, plain = (torch.load(runs[s], weights_only=True)["state_dict"] for s in runs)
    assert sharded.keys() == plain.keys()
    for name, value in plain.items():
        torch.testing.assert_close(sharded[name], value, rtol=0, atol=1e-5, msg=name)
    (tmp_path / "images").mkdir()
    for index, (image, _) in zip(range(3), DigitsSource("val", image_size=32)):
        image.save(tmp_path / "images" / f"{index}.png")
    vistra("predict", "--ckpt", runs["fsdp_blocks"], "--input", tmp_path / "images", "--output",
           tmp_path / "out", cwd=tmp_path)  # fmt: skip
    assert np.isfinite(np.load(tmp_path / "out/embeddings.npy")).all()
