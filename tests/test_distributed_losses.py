"""Loss normalisation across processes at world size 4 (CPU, gloo, 4 spawned processes, each
with 2 of 8 images): SupCon's gathered contrast set, DETR's ``num_boxes`` and Mask2Former's
``num_masks`` (targets averaged over ranks) make the rank-averaged losses and gradients equal
the single-process values on the concatenated batch. Images hold 0 to 3 objects, so ranks
hold different counts."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from vistra.losses import HungarianMatcher, SetCriterion, SupConLoss
from vistra.losses.mask_losses import dice_loss, sigmoid_ce_loss
from vistra.losses.set_criterion import num_targets_across_ranks

WORLD, IMAGES, QUERIES, CLASSES, POINTS = 4, 8, 5, 3, 16
COUNTS = [0, 3, 1, 2, 3, 0, 1, 1]  # objects per image


def inputs() -> dict:
    generator = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.rand(*shape, generator=generator)

    targets = []
    for count in COUNTS:
        centres = rand(count, 2) * 0.6 + 0.2
        sizes = rand(count, 2) * 0.2 + 0.05
        labels = torch.randint(0, CLASSES, (count,), generator=generator)
        targets.append({"labels": labels, "boxes": torch.cat([centres, sizes], dim=1)})
    return {
        "features": F.normalize(torch.randn(IMAGES, 2, 6, generator=generator), dim=-1),
        "classes": torch.randint(0, 3, (IMAGES,), generator=generator),
        "pred_logits": torch.randn(IMAGES, QUERIES, CLASSES + 1, generator=generator),
        "pred_boxes": rand(IMAGES, QUERIES, 4) * 0.5 + 0.25,
        "targets": targets,
        "point_logits": torch.randn(sum(COUNTS), POINTS, generator=generator),
        "point_targets": (rand(sum(COUNTS), POINTS) > 0.5).float(),
    }


def losses(data: dict, images: slice) -> tuple[dict, list]:
    """The normalised terms of the images in ``images`` and their leaf tensors."""
    leaves = [data[k][images].clone().requires_grad_() for k in ("features", "pred_boxes")]
    features, boxes = leaves
    terms = {"supcon": SupConLoss(temperature=0.2)(features, data["classes"][images])}
    targets = data["targets"][images]
    criterion = SetCriterion(CLASSES, HungarianMatcher(1, 5, 2))
    outputs = {"pred_logits": data["pred_logits"][images], "pred_boxes": boxes}
    detr = criterion(outputs, targets)
    terms.update(loss_bbox=detr["loss_bbox"], loss_giou=detr["loss_giou"])
    first = sum(COUNTS[: images.start or 0])
    masks = slice(first, first + sum(len(t["labels"]) for t in targets))
    num_masks = num_targets_across_ranks(masks.stop - masks.start, torch.device("cpu"))
    logits = data["point_logits"][masks]
    terms["loss_mask"] = sigmoid_ce_loss(logits, data["point_targets"][masks], num_masks)
    terms["loss_dice"] = dice_loss(logits, data["point_targets"][masks], num_masks)
    terms["num_masks"] = torch.tensor(num_masks)
    return terms, leaves


def worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    share = IMAGES // WORLD
    terms, leaves = losses(inputs(), slice(rank * share, (rank + 1) * share))
    # DDP averages gradients over ranks: the gradient of the mean of the ranks' losses.
    sum(terms[k] for k in ("supcon", "loss_bbox", "loss_giou")).backward()
    averaged = {name: value.detach().clone() for name, value in terms.items()}
    for value in averaged.values():
        dist.all_reduce(value)
    gathered = [None] * WORLD
    dist.all_gather_object(gathered, [leaf.grad / WORLD for leaf in leaves])
    if rank == 0:
        grads = [torch.cat([g[i] for g in gathered]) for i in range(len(leaves))]
        torch.save({"terms": {k: v / WORLD for k, v in averaged.items()}, "grads": grads}, out)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_world_size_4_normalises_like_one_process(tmp_path):
    out = tmp_path / "rank0.pt"
    mp.spawn(worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    distributed = torch.load(out)

    terms, leaves = losses(inputs(), slice(0, IMAGES))
    sum(terms[k] for k in ("supcon", "loss_bbox", "loss_giou")).backward()
    assert float(terms["num_masks"]) == sum(COUNTS)
    assert float(distributed["terms"]["num_masks"]) == sum(COUNTS) / WORLD  # every rank's
    for name in ("supcon", "loss_bbox", "loss_giou", "loss_mask", "loss_dice"):
        single, averaged = terms[name].detach(), distributed["terms"][name]
        # SupCon: the mean over ranks of each rank's anchors = the mean over all anchors;
        # the others: sums over each rank's objects / (all objects / 4), averaged over ranks.
        torch.testing.assert_close(averaged, single, rtol=1e-5, atol=1e-6, msg=name)
    for got, leaf in zip(distributed["grads"], leaves):
        torch.testing.assert_close(got, leaf.grad, rtol=1e-5, atol=1e-6)
