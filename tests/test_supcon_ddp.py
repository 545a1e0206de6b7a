"""Under DDP (2 CPU processes, gloo) SupConLoss sees the global batch: the loss averaged over
ranks and the DDP-averaged gradients equal the single-process values on the concatenated batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from vistra.losses import SupConLoss

BATCH, VIEWS, IN_DIM, DIM = 8, 2, 12, 6


def make_inputs():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(BATCH, VIEWS, IN_DIM, generator=generator)
    labels = torch.randint(0, 3, (BATCH,), generator=generator)
    return inputs, labels


def make_model():
    torch.manual_seed(1)
    return nn.Linear(IN_DIM, DIM)


def loss_of(model, inputs, labels, use_labels):
    features = F.normalize(model(inputs), dim=-1)  # [B, V, D]
    return SupConLoss(temperature=0.2)(features, labels if use_labels else None)


def worker(rank, world, port, use_labels, out_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    inputs, labels = make_inputs()
    local = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    model = nn.parallel.DistributedDataParallel(make_model())
    loss = loss_of(model, inputs[local], labels[local], use_labels)
    loss.backward()
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    if rank == 0:
        grads = [p.grad for p in model.module.parameters()]
        torch.save({"loss": mean_loss / world, "grads": grads}, out_path)
    dist.barrier()
    dist.destroy_process_group()
    # The interpreter's own teardown of gloo's threads sometimes aborts ("terminate called
    # without an active exception") in a process that imported little besides torch; the
    # results are on disk, so leave without it.
    os._exit(0)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("use_labels", [True, False])
def test_two_process_ddp_equals_single_process(tmp_path, use_labels):
    out_path = tmp_path / "rank0.pt"
    mp.spawn(worker, args=(2, free_port(), use_labels, out_path), nprocs=2, join=True)
    distributed = torch.load(out_path)

    model = make_model()
    inputs, labels = make_inputs()
    loss = loss_of(model, inputs, labels, use_labels)
    loss.backward()

    torch.testing.assert_close(distributed["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
    for got, expected in zip(distributed["grads"], [p.grad for p in model.parameters()]):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
