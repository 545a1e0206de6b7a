"""Loss normalisation across processes at world size 4 (CPU, gloo, 4 spawned processes, each
with 2 of 8 images): SupCon's gathered contrast set, ``SetCriterion``'s (DETR) and
``MaskSetCriterion``'s (Mask2Former) target counts and class weights averaged over ranks make
the rank-averaged losses and gradients equal the single-process values on the concatenated
batch. Images hold 0 to 3 objects, so ranks hold different counts; Mask2Former's points are
drawn from one generator per image, as training draws them."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from vistra.losses import HungarianMatcher, MaskSetCriterion, SetCriterion, SupConLoss

WORLD, IMAGES, QUERIES, CLASSES, POINTS, SIDE = 4, 8, 5, 3, 16, 32
TERMS = ("supcon", "loss_ce", "loss_bbox", "loss_giou", "mask_ce", "loss_mask", "loss_dice")
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
        masks = torch.zeros(count, SIDE, SIDE, dtype=torch.bool)
        for mask, (x, y), (w, h) in zip(masks, (centres * SIDE).long(), (sizes * SIDE).long()):
            mask[y - h // 2 : y + h // 2 + 1, x - w // 2 : x + w // 2 + 1] = True
        targets.append({"labels": labels, "boxes": torch.cat([centres, sizes], dim=1),
                        "masks": masks})  # fmt: skip
    return {
        "features": F.normalize(torch.randn(IMAGES, 2, 6, generator=generator), dim=-1),
        "classes": torch.randint(0, 3, (IMAGES,), generator=generator),
        "pred_logits": torch.randn(IMAGES, QUERIES, CLASSES + 1, generator=generator),
        "pred_boxes": rand(IMAGES, QUERIES, 4) * 0.5 + 0.25,
        "targets": targets,
        "mask_logits": torch.randn(IMAGES, QUERIES, CLASSES + 1, generator=generator),
        "pred_masks": torch.randn(IMAGES, QUERIES, SIDE // 4, SIDE // 4, generator=generator),
    }


def losses(data: dict, images: slice) -> tuple[dict, list]:
    """The normalised terms of the images in ``images`` and their leaf tensors."""
    names = ("features", "pred_boxes", "pred_logits", "pred_masks", "mask_logits")
    leaves = [data[k][images].clone().requires_grad_() for k in names]
    features, boxes, logits, masks, mask_logits = leaves
    terms = {"supcon": SupConLoss(temperature=0.2)(features, data["classes"][images])}
    targets = data["targets"][images]
    criterion = SetCriterion(CLASSES, HungarianMatcher(1, 5, 2))
    detr = criterion({"pred_logits": logits, "pred_boxes": boxes}, targets)
    terms.update({k: detr[k] for k in ("loss_ce", "loss_bbox", "loss_giou")})
    generators = [torch.Generator().manual_seed(100 + i) for i in range(IMAGES)][images]
    mask_criterion = MaskSetCriterion(CLASSES, num_points=POINTS)
    outputs = {"pred_logits": mask_logits, "pred_masks": masks}
    mask2former = mask_criterion(outputs, targets, generators=generators)
    terms.update(mask_ce=mask2former["loss_ce"], loss_mask=mask2former["loss_mask"],
                 loss_dice=mask2former["loss_dice"])  # fmt: skip
    return terms, leaves


def worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    share = IMAGES // WORLD
    terms, leaves = losses(inputs(), slice(rank * share, (rank + 1) * share))
    # DDP averages gradients over ranks: the gradient of the mean of the ranks' losses.
    sum(terms[k] for k in TERMS).backward()
    averaged = {name: value.detach().clone() for name, value in terms.items()}
    for value in averaged.values():
        dist.all_reduce(value)
    gathered = [None] * WORLD
    dist.all_gather_object(gathered, [leaf.grad / WORLD for leaf in leaves])
    if rank == 0:
        grads = [torch.cat([g[i] for g in gathered]) for i in range(len(leaves))]
        torch.save({"terms": {k: v / WORLD for k, v in averaged.items()}, "grads": grads}, out)
    dist.barrier()
    dist.destroy_process_group()
    # The interpreter's own teardown of gloo's threads sometimes aborts ("terminate called
    # without an active exception") in a process that imported little besides torch; the
    # results are on disk, so leave without it.
    os._exit(0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_world_size_4_normalises_like_one_process(tmp_path):
    out = tmp_path / "rank0.pt"
    mp.spawn(worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    distributed = torch.load(out)

    terms, leaves = losses(inputs(), slice(0, IMAGES))
    sum(terms[k] for k in TERMS).backward()
    for name in TERMS:
        single, averaged = terms[name].detach(), distributed["terms"][name]
        # SupCon: the mean over ranks of each rank's anchors = the mean over all anchors;
        # the others: sums over each rank's objects / (all objects / 4), averaged over ranks;
        # the class terms: each rank's weighted sum / (the batch's class weights / 4).
        torch.testing.assert_close(averaged, single, rtol=1e-5, atol=1e-6, msg=name)
    for got, leaf in zip(distributed["grads"], leaves):
        torch.testing.assert_close(got, leaf.grad, rtol=1e-5, atol=1e-6)
