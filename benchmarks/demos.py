"""Time to accuracy of every demo: each ``vistra demo NAME`` run alone, in its own process, one
row per demo: its headline number against the target the demo must show, the wall time and
where it went (writing data, loading batches, training steps, evaluation).

Run: .venv/bin/python benchmarks/demos.py [mask2former supcon detr mae]  (about 25 minutes)
Each demo writes into a fresh temporary folder; the table is printed at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import table  # noqa: E402

# name -> (what is shown, how it is read from the demo's results, target)
HEADLINES = {
    "mask2former": ("held-out PQ / PQ things", lambda r: f"{r['PQ']:.3f} / {r['PQ_th']:.3f}",
                    "PQ >= 0.60, things >= 0.40, 6 min"),
    "supcon": ("probe top-1 (random encoder)",
               lambda r: f"{r['probe_top1']:.3f} ({r['random_probe_top1']:.3f})", ">= 0.95"),
    "detr": ("held-out box AP50", lambda r: f"{r['AP50']:.3f}", ">= 0.5"),
    "mae": ("probe top-1 (random encoder)",
            lambda r: f"{r['probe_top1']:.3f} ({r['random_probe_top1']:.3f})",
            "margin >= 0.05, 4 min"),
}  # fmt: skip

PARTS = ("data set written", "data", "training", "evaluation", "other")
RUNNER = """
import json, sys
from vistra.demos import run_demo
results = run_demo(sys.argv[1], out_dir=sys.argv[2])
keep = {k: v for k, v in results.items() if isinstance(v, (int, float, str, dict))}
print("RESULTS " + json.dumps(keep))
"""


def run(name: str, folder: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", RUNNER, name, str(folder)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"vistra demo {name} failed:\n{done.stderr[-2000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULTS "))
    return json.loads(line[len("RESULTS ") :])


def main() -> None:
    names = sys.argv[1:] or list(HEADLINES)
    rows = []
    for name in names:
        with tempfile.TemporaryDirectory() as scratch:
            results = run(name, Path(scratch))
        label, read, target = HEADLINES[name]
        time = results.get("time", {})
        total = sum(time.values()) or results.get("seconds", float("nan"))
        parts = " / ".join(f"{time.get(part, 0):.0f}" for part in PARTS)
        rows.append([f"`vistra demo {name}`", label, read(results), target,
                     f"{total / 60:.1f} min", parts])  # fmt: skip
        print(rows[-1], flush=True)
    header = ["command", "shows", "value", "target", "wall",
              "s: writing / loading / training / evaluation / other"]  # fmt: skip
    print(table(header, rows))


if __name__ == "__main__":
    main()
