"""DETR training step and Hungarian matcher: vistra against Hugging Face, side by side.

1. Step time (forward + loss + backward + AdamW) and peak memory of DETR-R50 at 512x512,
   batch 2, float32 and bf16 autocast; both models hold the same random weights (HF's,
   converted) and get the same images and targets; auxiliary losses on.
2. Matcher time for batch 16 x 100 queries x 20 targets against HF's matcher.
3. Achieved FLOP/s of the step (torch.utils.flop_counter) against the measured matmul peak.

Run: .venv/bin/python benchmarks/detr.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from common import matmul_peak_flops, peak_memory_mib, report_peak, seconds_per_call, table  # noqa: E402

from vistra.convert.detr import detr_state_dict_from_hf  # noqa: E402
from vistra.losses import HungarianMatcher, SetCriterion  # noqa: E402
from vistra.models import DETR  # noqa: E402

IMAGE, BATCH, CLASSES = 512, 2, 91


def build(which: str) -> torch.nn.Module:
    from transformers import DetrConfig, DetrForObjectDetection

    config = DetrConfig(use_timm_backbone=True, backbone="resnet50", num_labels=CLASSES,
                        use_pretrained_backbone=False, auxiliary_loss=True)  # fmt: skip
    torch.manual_seed(0)
    peer = DetrForObjectDetection(config)
    if which == "hf":
        return peer
    ours = DETR(CLASSES, dropout=config.dropout)
    ours.load_state_dict(detr_state_dict_from_hf(peer.state_dict()))
    return ours


def batch_and_targets(batch: int, objects: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, IMAGE, IMAGE, generator=generator)
    targets = []
    for _ in range(batch):
        centres = 0.2 + 0.6 * torch.rand(objects, 2, generator=generator)
        sizes = 0.05 + 0.2 * torch.rand(objects, 2, generator=generator)
        targets.append({"labels": torch.randint(0, CLASSES, (objects,), generator=generator),
                        "boxes": torch.cat([centres, sizes], 1)})  # fmt: skip
    return images, targets


def make_step(which: str, dtype: torch.dtype | None):
    model = build(which).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    images, targets = batch_and_targets(BATCH, 8)
    pixel_mask = torch.ones(BATCH, IMAGE, IMAGE, dtype=torch.long)
    hf_labels = [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in targets]
    criterion = SetCriterion(CLASSES)

    def step():
        torch.manual_seed(0)  # same dropout masks on both sides
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            if which == "hf":
                loss = model(pixel_values=images, pixel_mask=pixel_mask, labels=hf_labels).loss
            else:
                loss = criterion.total(criterion(model(images, pixel_mask.bool()), targets))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()

    return step


def matcher_times() -> list[list[str]]:
    from transformers.loss.loss_for_object_detection import HungarianMatcher as PeerMatcher

    generator = torch.Generator().manual_seed(0)
    outputs = {"pred_logits": torch.randn(16, 100, CLASSES + 1, generator=generator),
               "pred_boxes": torch.rand(16, 100, 4, generator=generator) * 0.5 + 0.25}  # fmt: skip
    _, targets = batch_and_targets(16, 20)
    peer_outputs = {"logits": outputs["pred_logits"], "pred_boxes": outputs["pred_boxes"]}
    peer_targets = [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in targets]
    ours = HungarianMatcher(1, 5, 2)
    peer = PeerMatcher(1, 5, 2)
    pairs = zip(ours(outputs, targets), peer(peer_outputs, peer_targets))
    same = all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in pairs)
    ours_s = seconds_per_call(lambda: ours(outputs, targets), warmup=2, repeat=20)
    peer_s = seconds_per_call(lambda: peer(peer_outputs, peer_targets), warmup=2, repeat=20)
    return [
        ["matcher 16x100x20, vistra", f"{ours_s * 1e3:.1f} ms", "", "", f"same matches: {same}"],
        ["matcher 16x100x20, hf", f"{peer_s * 1e3:.1f} ms", "", "", ""],
        ["  hf / vistra time", f"{peer_s / ours_s:.2f}x", "", "", ""],
    ]


CASES = {f"{which}:{name}": (which, dtype) for which in ("vistra", "hf")
         for name, dtype in (("fp32", None), ("bf16", torch.bfloat16))}  # fmt: skip


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"DETR-R50 {IMAGE}x{IMAGE}, batch {BATCH}\n")  # fmt: skip
    peaks = {"fp32": matmul_peak_flops(torch.float32), "bf16": matmul_peak_flops(torch.bfloat16)}
    print(f"matmul peak: fp32 {peaks['fp32'] / 1e9:.0f}, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s\n")
    rows = []
    for precision in ("fp32", "bf16"):
        times = {}
        for which in ("vistra", "hf"):
            key = f"{which}:{precision}"
            step = make_step(*CASES[key])
            with FlopCounterMode(display=False) as counter:
                step()
            times[which] = seconds_per_call(step, warmup=1, repeat=3)
            memory = peak_memory_mib(__file__, key)
            achieved = counter.get_total_flops() / times[which]
            rows.append(
                [f"{which} {precision}", f"{times[which]:.2f} s", f"{memory:.0f}",
                 f"{BATCH / times[which]:.2f}", f"{achieved / peaks[precision]:.0%}"]
            )  # fmt: skip
        rows.append([f"  hf / vistra time, {precision}", f"{times['hf'] / times['vistra']:.2f}x",
                     "", "", ""])  # fmt: skip
    rows += matcher_times()
    print(table(["case", "time", "peak MiB", "img/s", "of matmul peak"], rows))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--peak":
        report_peak(lambda: make_step(*CASES[sys.argv[2]]))
    else:
        main()
