"""How fast DETR learns held-out shapes on this CPU: a plain training loop with periodic COCO AP.

The numbers in the README's DETR paragraph come from this script (defaults = the demo's model:
LCNet-050 at stride 8, d=128, 2+3 layers, 10 queries, batch 32, AdamW 4e-4 with 100 warm-up
steps and a cosine decay, gradient clip 0.1, 64-pixel shapes). ``--pretrain-steps N`` first
trains the backbone for N steps on box maps (``BoxMapPretraining``, as the demo does with 1,512);
0 starts DETR from a random backbone. At the end it also scores 800 training images and the
held-out images with BatchNorm in batch-statistics mode, to tell under-fitting from
over-fitting and from a BatchNorm artefact.

Run: .venv/bin/python benchmarks/detr_convergence.py [--pretrain-steps 1512 --steps 2400 ...]
(about 8 minutes on 2 cores with the defaults). ``--record FILE.json`` keeps the curve (held-out
AP50 against training minutes, the box-map stage included, evaluations not); ``--plot A.json
B.json`` draws recorded curves into ``benchmarks/plots/detr_ap50_minutes.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import time
from pathlib import Path

import lightning as L
import torch

from vistra.data import DetectionDataModule
from vistra.data.shapes import write_shapes
from vistra.evaluation.coco import COCOEvaluator, detections_to_coco, tensor_image_ids
from vistra.losses import SetCriterion
from vistra.models import DETR, detr_postprocess
from vistra.tasks import BoxMapPretraining


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="vistra_runs/shapes_convergence")
    parser.add_argument("--backbone", default="lcnet_050")
    parser.add_argument("--stage", type=int, default=2, help="backbone stage (2 = stride 8)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--pretrain-steps", type=int, default=0, help="box-map backbone steps")
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--every", type=int, default=800, help="evaluate every N steps")
    parser.add_argument("--record", help="write the AP50 curve to this JSON file")
    parser.add_argument("--plot", nargs="+", help="draw recorded curves (JSON files) and stop")
    options = parser.parse_args()
    if options.plot:
        return plot(options.plot, Path(__file__).parent / "plots" / "detr_ap50_minutes.png")
    curve = {"pretrain_steps": options.pretrain_steps, "minutes": [0.0], "ap50": [0.0]}
    trained = 0.0  # seconds of training, evaluations left out
    torch.manual_seed(0)
    root = Path(options.data) / f"size{options.size}"
    if not (root / "annotations" / "instances_val.json").is_file():
        write_shapes(root, train=2000, val=200, size=options.size, seed=0, max_objects=3)
    ann, images = root / "annotations", root / "images"
    data = DetectionDataModule(str(ann / "instances_train.json"), str(images / "train"),
                               str(ann / "instances_val.json"), str(images / "val"),
                               batch_size=options.batch, scales=(options.size,),
                               max_size=2 * options.size, crop=None, eval_size=options.size,
                               eval_max_size=2 * options.size)  # fmt: skip
    model = DETR(3, backbone=options.backbone, backbone_stage=options.stage,
                 frozen_batchnorm=False, train_stem=True, hidden_dim=128,
                 num_encoder_layers=2, num_decoder_layers=3, ffn_dim=512, dropout=0.0,
                 num_queries=10)  # fmt: skip
    if options.pretrain_steps:
        started = time.perf_counter()
        pretraining = BoxMapPretraining(3, options.backbone, options.stage, warmup_steps=50)
        trainer = L.Trainer(max_steps=options.pretrain_steps, logger=False, limit_val_batches=0,
                            enable_checkpointing=False, enable_progress_bar=False)  # fmt: skip
        trainer.fit(pretraining, data)
        model.backbone.load_state_dict(pretraining.backbone.state_dict())
        trained = time.perf_counter() - started
        curve["minutes"].append(trained / 60)
        curve["ap50"].append(0.0)  # no detector yet
        print(f"box-map pre-training: {options.pretrain_steps} steps in "
              f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
    criterion = SetCriterion(3)
    optimizer = torch.optim.AdamW(model.parameters(), options.lr, weight_decay=1e-4)

    def factor(step: int) -> float:
        if step < options.warmup:
            return (step + 1) / options.warmup
        progress = (step - options.warmup) / max(options.steps - options.warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def evaluate(split: str = "val", batch_statistics: bool = False, limit: int = 800) -> float:
        model.eval()
        if batch_statistics:
            model.backbone.train()
        evaluator = COCOEvaluator(ann / f"instances_{split}.json")
        source = data.val_source if split == "val" else data.train_source
        seen = 0
        with torch.no_grad():
            for x, mask, targets in data.eval_loader(source):
                sizes = torch.stack([t["orig_size"] for t in targets])
                ids, results = tensor_image_ids(targets), []
                for image_id, detection in zip(ids, detr_postprocess(model(x, mask), sizes)):
                    results += detections_to_coco(image_id, detection, data.category_ids)
                evaluator.update(ids, results)
                seen += len(ids)
                if seen >= limit:
                    break
        with contextlib.redirect_stdout(io.StringIO()):
            stats, _ = evaluator.compute()
        model.train()
        return stats["AP50"]

    started, step, sums = time.perf_counter(), 0, {}
    while step < options.steps:
        for x, mask, targets in data.train_dataloader():
            terms = criterion(model(x, mask), targets)
            loss = criterion.total(terms)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            optimizer.step()
            schedule.step()
            step += 1
            for name in ("loss_ce", "class_error", "loss_giou"):
                sums[name] = sums.get(name, 0.0) + terms[name].item()
            if step % 100 == 0:
                means = ", ".join(f"{k} {v / 100:.3f}" for k, v in sums.items())
                print(f"step {step}: {means} ({time.perf_counter() - started:.0f} s)", flush=True)
                sums = {}
            if step % options.every == 0 or step == options.steps:
                trained += time.perf_counter() - started
                ap50 = evaluate()
                curve["minutes"].append(trained / 60)
                curve["ap50"].append(ap50)
                print(f"step {step}: held-out box AP50 {ap50:.3f} ({trained:.0f} s of "
                      "training)", flush=True)  # fmt: skip
                started = time.perf_counter()
            if step >= options.steps:
                break
    if options.record:
        Path(options.record).write_text(json.dumps(curve, indent=1) + "\n")
    print(f"training images (800): AP50 {evaluate('train'):.3f}; held-out with batch "
          f"statistics: AP50 {evaluate('val', batch_statistics=True):.3f}")  # fmt: skip


def plot(files: list[str], out: Path) -> None:
    """Held-out AP50 against minutes of training, one line per recorded run."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from common import line_chart

    lines = []
    for curve in (json.loads(Path(file).read_text()) for file in files):
        steps = curve["pretrain_steps"]
        label = f"box-map backbone stage ({steps} steps), then DETR" if steps else "DETR alone"
        lines.append((label, curve["minutes"], curve["ap50"]))
    panel = {"title": "held-out box AP50 (DETR on 64-pixel shapes)",
             "x_label": "minutes of training, 2 CPU cores", "lines": lines}  # fmt: skip
    print(f"wrote {line_chart([panel], out)}")


if __name__ == "__main__":
    main()
