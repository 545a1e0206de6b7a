"""SupCon benchmarks on this CPU.

1. Loss forward+backward at batch 1024 x 2 views, D=128: vistra's SupConLoss against a naive
   dense reference in the style of the original repository (float masks built with repeat and
   scatter, exp/log without log-sum-exp).
2. Encoder training-step throughput (images/s) in float32 and bf16 autocast.
3. Achieved FLOP/s of that step (counted by torch.utils.flop_counter) against this machine's
   measured fp32 / bf16 matmul peak.

Run: .venv/bin/python benchmarks/supcon.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from common import matmul_peak_flops, peak_memory_mib, report_peak, seconds_per_call, table  # noqa: E402

from vistra.losses import SupConLoss  # noqa: E402
from vistra.models import SupConModel  # noqa: E402

BATCH, VIEWS, DIM, CLASSES = 1024, 2, 128, 100


def naive_supcon(features, labels, temperature=0.1, base_temperature=0.07):
    """Dense reference: the straightforward float-mask formulation."""
    batch, views = features.shape[:2]
    mask = torch.eq(labels[:, None], labels[None, :]).float().repeat(views, views)
    contrast = torch.cat(torch.unbind(features, dim=1), dim=0)
    logits = contrast @ contrast.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    logits_mask = torch.ones_like(mask).scatter_(1, torch.arange(batch * views)[:, None], 0)
    mask = mask * logits_mask
    exp_logits = torch.exp(logits) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
    return (-(temperature / base_temperature) * mean_log_prob_pos).mean()


def loss_case(which: str):
    def make():
        torch.manual_seed(0)
        features = F.normalize(torch.randn(BATCH, VIEWS, DIM), dim=-1).requires_grad_()
        labels = torch.randint(0, CLASSES, (BATCH,))
        ours = SupConLoss(temperature=0.1)

        def step():
            features.grad = None
            loss = ours(features, labels) if which == "vistra" else naive_supcon(features, labels)
            loss.backward()
            return loss

        return step

    return make


def train_step_case(encoder: str, size: int, batch: int, dtype: torch.dtype | None):
    torch.manual_seed(0)
    model = SupConModel(encoder, hidden_dim=512)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = SupConLoss(0.1)
    views = torch.randn(batch // 2, 2, 3, size, size)
    labels = torch.randint(0, 10, (batch // 2,))

    def step():
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            projections = model(views.flatten(0, 1)).view(batch // 2, 2, -1)
        loss = criterion(projections.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")

    steps = {name: loss_case(name)() for name in ("vistra", "naive")}
    with torch.no_grad():
        probe = F.normalize(torch.randn(BATCH, VIEWS, DIM), dim=-1)
        probe_labels = torch.randint(0, CLASSES, (BATCH,))
        gap = (SupConLoss(0.1)(probe, probe_labels) - naive_supcon(probe, probe_labels)).abs()
    times = {name: seconds_per_call(step, repeat=7) for name, step in steps.items()}
    memory = {name: peak_memory_mib(__file__, name) for name in steps}
    print(f"1. SupCon loss forward+backward, B={BATCH} x V={VIEWS}, D={DIM}, {CLASSES} classes")
    print(f"   |vistra - naive| loss = {gap.item():.2e}")
    print(
        table(
            ["implementation", "ms / step", "peak extra MiB", "time ratio", "memory ratio"],
            [
                [
                    name,
                    f"{times[name] * 1e3:.1f}",
                    f"{memory[name]:.0f}",
                    f"{times[name] / times['naive']:.2f}",
                    f"{memory[name] / max(memory['naive'], 1e-9):.2f}",
                ]
                for name in ("vistra", "naive")
            ],
        )
    )

    peaks = {"fp32": matmul_peak_flops(torch.float32), "bf16": matmul_peak_flops(torch.bfloat16)}
    print(
        f"\nmeasured matmul peak (2048^3): fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
        f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s"
    )
    rows = []
    for encoder, size, batch in (("resnet18", 32, 256), ("resnet18", 64, 128)):
        for precision, dtype in (("fp32", None), ("bf16-mixed", torch.bfloat16)):
            step = train_step_case(encoder, size, batch, dtype)
            with FlopCounterMode(display=False) as counter:
                step()
            flops = counter.get_total_flops()
            seconds = seconds_per_call(step, warmup=1, repeat=3)
            peak = peaks["bf16" if dtype else "fp32"]
            rows.append(
                [
                    f"{encoder} {size}px",
                    precision,
                    batch,
                    f"{batch / seconds:.0f}",
                    f"{flops / seconds / 1e9:.0f}",
                    f"{flops / seconds / peak:.0%}",
                ]
            )
    print("\n2-3. SupCon training step (encoder + MLP head + loss + SGD), images = views")
    print(
        table(
            ["encoder", "precision", "views/step", "img/s", "GFLOP/s", "of matmul peak"],
            rows,
        )
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--peak":
        report_peak(loss_case(sys.argv[2]))
    else:
        main()
