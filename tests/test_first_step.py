"""The first training step at world size 4 (``torchrun``: 2 "nodes" x 2 processes, CPU/gloo)
equals the single-process step on the same global batch, through ``vistra fit``, for every
family: the mean of the four processes' losses is the one-process loss, and the gradients the
optimizer uses (DDP's average) are the one-process gradients.

What makes them equal: the training sampler deals one permutation out to the ranks; SupCon
gathers the embeddings of every rank; DETR's and Mask2Former's losses divide by the targets of
all ranks; each image's MAE mask and Mask2Former points come from that image's own generator
(``engine.seeding.sample_seeds``). The configs are the ones for a user's own data, shrunk in
steps, image size and network size (the README's "Smaller networks" keys: ResNet-18, narrow
transformers) only. BatchNorm statistics are per process under DDP, so the test uses the
configs whose BatchNorm is frozen (DETR, Mask2Former: as in the papers) or global (SupCon:
``vistra.models.layers.global_batchnorm`` under DDP, as SimCLR and SupCon train).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from command import SMALL, shapes_data_args
from runner import run_vistra
from test_cluster import CPU, ONE_PROCESS, finish, free_port

from vistra.data.shapes import write_shapes

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TESTS = Path(__file__).resolve().parent
WORLD, LOCAL_BATCH = 4, 2
ONE_STEP = ["--trainer.max_steps=1", "--trainer.limit_val_batches=0",
            "--data.init_args.num_workers=0"]  # fmt: skip


def recorder(folder: Path) -> str:
    spec = {"class_path": "first_step.FirstStepRecorder", "init_args": {"folder": str(folder)}}
    return "--trainer.callbacks+=" + json.dumps(spec)


# The recorder callback is imported by class path in every process.
RECORDER_PATH = {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def start_torchrun(args: list, cwd: Path) -> list:
    """``torchrun`` as 2 "nodes" of ``WORLD // 2`` processes each, started, not waited for."""
    import subprocess as sp
    import sys

    port = free_port()
    commands = [[sys.executable, "-m", "torch.distributed.run", "--nnodes=2",
                 f"--nproc_per_node={WORLD // 2}", f"--node_rank={node}",
                 "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "vistra.cli",
                 *map(str, args)] for node in range(2)]  # fmt: skip
    return [sp.Popen(c, cwd=cwd, env={**os.environ, **RECORDER_PATH}, stdout=sp.PIPE,
                     stderr=sp.PIPE, text=True) for c in commands]  # fmt: skip


def first_steps(args: list, tmp_path: Path, batch_key: str = "--data.init_args.batch_size"):
    """(one-process record, [records of the 4 ranks])."""
    one, four = tmp_path / "one", tmp_path / "four"
    for folder in (one, four):
        folder.mkdir()
    four_args = [*args, *ONE_STEP, *CPU, "--trainer.num_nodes=2", "--trainer.devices=2",
                 f"{batch_key}={LOCAL_BATCH}", recorder(four / "record")]  # fmt: skip
    processes = start_torchrun(four_args, four)
    # The reference, one process (the runner stands in for it), while the four start up.
    single_run = run_vistra(*args, *ONE_STEP, *ONE_PROCESS, f"{batch_key}={WORLD * LOCAL_BATCH}",
                            recorder(one / "record"), cwd=one, env=RECORDER_PATH)  # fmt: skip
    trained = finish(processes)
    assert single_run.returncode == 0, single_run.stderr[-3000:]
    assert "last checkpoint:" in trained  # rank 0's summary of the run that trained at 4
    single = torch.load(one / "record/rank0.pt", weights_only=True)
    ranks = [torch.load(four / f"record/rank{r}.pt", weights_only=True) for r in range(WORLD)]
    return single, ranks


def assert_same_step(single: dict, ranks: list[dict], rtol: float = 1e-4) -> None:
    mean_loss = torch.stack([r["loss"] for r in ranks]).mean()
    torch.testing.assert_close(mean_loss, single["loss"], rtol=rtol, atol=1e-6)
    expected = single["gradients"]
    assert expected and ranks[0]["gradients"].keys() == expected.keys()
    scale = max(g.abs().max().item() for g in expected.values())
    worst = max((g - expected[n]).abs().max().item() for n, g in ranks[0]["gradients"].items())
    print(f"largest gradient difference: {worst / scale:.1e} of the largest gradient")
    for rank in ranks:
        for name, gradient in rank["gradients"].items():
            torch.testing.assert_close(gradient, expected[name], rtol=rtol, atol=rtol * scale,
                                       msg=name)  # fmt: skip
        for name, buffer in rank["buffers"].items():  # running statistics of the global batch
            torch.testing.assert_close(buffer, single["buffers"][name], rtol=rtol, atol=1e-6,
                                       msg=name)  # fmt: skip


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("first_step") / "shapes"
    write_shapes(root, WORLD * LOCAL_BATCH, 2, 64, seed=4)
    return root


def test_mae_first_step_at_world_size_4(tmp_path):
    args = ["fit", "--config", CONFIGS / "mae/vit_tiny_digits.yaml",
            "--model.init_args.warmup_epochs=0"]  # fmt: skip
    assert_same_step(*first_steps(args, tmp_path))


def test_detr_first_step_at_world_size_4(shapes, tmp_path):
    args = ["fit", "--config", CONFIGS / "detr/custom_coco.yaml",
            *shapes_data_args(shapes, "instances"), "--data.init_args.scales=[64]",
            "--data.init_args.max_size=96", "--data.init_args.crop=null",
            "--data.init_args.eval_size=64", "--data.init_args.eval_max_size=96",
            # Dropout draws a mask per token and process: four processes cannot draw what one
            # draws, in any framework. Off here, so that what is compared is the rest.
            "--model.init_args.network.init_args.dropout=0", *SMALL["detr"]]  # fmt: skip
    assert_same_step(*first_steps(args, tmp_path))


def test_mask2former_first_step_at_world_size_4(shapes, tmp_path):
    args = ["fit", "--config", CONFIGS / "mask2former/custom_panoptic.yaml",
            *shapes_data_args(shapes, "panoptic"), "--data.init_args.size=64",
            "--data.init_args.eval_size=64", "--data.init_args.eval_max_size=96",
            "--model.init_args.num_points=256",
            # the config's bf16-mixed keeps 8 bits of each product: differences of 1% would
            # hide in its rounding, so the comparison runs in float32
            "--trainer.precision=32-true", *SMALL["mask2former"]]  # fmt: skip
    assert_same_step(*first_steps(args, tmp_path), rtol=1e-3)


def test_supcon_first_step_at_world_size_4(tmp_path):
    args = ["fit", "--config", CONFIGS / "supcon/resnet18_digits.yaml",
            "--data.init_args.image_size=16",
            "--model.init_args.network.init_args.hidden_dim=64"]  # fmt: skip
    assert_same_step(*first_steps(args, tmp_path))
