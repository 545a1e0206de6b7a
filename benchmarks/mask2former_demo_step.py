"""The Mask2Former demo network's training step (forward + backward, batch 16 at 96 pixels):
NCHW against ``channels_last`` with the same weights, in alternating rounds; ``--profile``
adds the operators that take the step's time.

Run: .venv/bin/python benchmarks/mask2former_demo_step.py [--profile]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from common import interleaved_seconds, median, round_ratios  # noqa: E402

from vistra.models import Mask2Former  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mask2former" / "shapes.yaml"


def demo_network(channels_last: bool) -> Mask2Former:
    options = yaml.safe_load(CONFIG.read_text())["model"]["init_args"]["network"]["init_args"]
    return Mask2Former(**{**options, "channels_last": channels_last})


def training_step(network: Mask2Former, images: torch.Tensor):
    def step() -> None:
        outputs = network(images)
        layers = [outputs, *outputs["aux_outputs"]]
        sum(o["pred_masks"].mean() + o["pred_logits"].mean() for o in layers).backward()

    return step


def main() -> None:
    torch.manual_seed(0)
    nchw = demo_network(channels_last=False)
    nhwc = demo_network(channels_last=True)
    nhwc.load_state_dict(nchw.state_dict())
    images = torch.randn(16, 3, 96, 96)
    steps = {"NCHW": training_step(nchw, images), "channels_last": training_step(nhwc, images)}
    times = interleaved_seconds(steps, repeat=8)
    for name, values in times.items():
        print(f"{name:<14} median {median(values) * 1000:.0f} ms "
              f"(rounds {min(values) * 1000:.0f}-{max(values) * 1000:.0f})")  # fmt: skip
    ratio, spread = round_ratios(times["NCHW"], times["channels_last"])
    print(f"NCHW / channels_last: {ratio} (rounds {spread})")
    if "--profile" in sys.argv:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as profiled:
            for _ in range(5):
                training_step(nchw, images)()
        print(profiled.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))


if __name__ == "__main__":
    main()
