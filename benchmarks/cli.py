"""Whole-process time of ``vistra`` commands, as a user waits for them: the help screens, and
the start-up of the commands that do work (``fit`` up to its resolved config, ``predict
--ckpt`` on one image, ``data shard`` of a two-image folder).

Each command runs in a fresh process (imports included), several times after one untimed run;
the median and the range are printed. ``--against OTHER/bin/vistra`` times another install
(an older commit's virtual environment) in alternating rounds with this one, for a before /
after table. ``--commands`` picks other argument lists (one per string; ``{ckpt}``,
``{image}``, ``{folder}`` and ``{out}`` name the files this script writes).

    .venv/bin/python benchmarks/cli.py [--runs 7] [--against /tmp/old/.venv/bin/vistra]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [
    "--help",
    "predict --help",
    "data --help",
    f"fit --config {ROOT / 'configs/supcon/resnet18_digits.yaml'} --print_config",
    "predict --ckpt {ckpt} --input {image} --output {out}/predicted",
    "data shard {folder} {out}/shards",
]


def vistra_executable() -> list[str]:
    beside_python = Path(sys.executable).with_name("vistra")
    if beside_python.exists():
        return [str(beside_python)]
    found = shutil.which("vistra")
    return [found] if found else [sys.executable, "-m", "vistra.cli"]


def write_inputs(folder: Path) -> dict[str, str]:
    """A SupCon ResNet-18 checkpoint as vistra's tasks write it, one image, a class folder."""
    import torch
    from PIL import Image

    from vistra.inference.checkpoint import NETWORK_KEY, network_spec
    from vistra.inference.spec import PREPROCESS_KEY
    from vistra.models import SupConModel

    network = SupConModel("resnet18", hidden_dim=64, feat_dim=32)
    state = {f"network.{k}": v for k, v in network.state_dict().items()}
    preprocess = {"resize": "center_crop", "size": 32}
    torch.save({NETWORK_KEY: network_spec(network), "state_dict": state,
                PREPROCESS_KEY: preprocess}, folder / "supcon.ckpt")  # fmt: skip
    for name in ("a", "b"):
        (folder / "classes/cat").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), (200, 30, 30)).save(folder / f"classes/cat/{name}.png")
    return {"ckpt": str(folder / "supcon.ckpt"), "image": str(folder / "classes/cat/a.png"),
            "folder": str(folder / "classes"), "out": str(folder / "out")}  # fmt: skip


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return elapsed


def timed(executables: list[list[str]], words: list[str], runs: int, out: Path) -> list[list]:
    """Seconds per executable, alternating which runs first in each round."""
    times: list[list[float]] = [[] for _ in executables]
    for executable in executables:
        shutil.rmtree(out, ignore_errors=True)
        seconds([*executable, *words])  # warm the file cache once, untimed
    for round_index in range(runs):
        order = list(range(len(executables)))
        if round_index % 2:
            order.reverse()
        for index in order:
            shutil.rmtree(out, ignore_errors=True)  # shard and predict write a fresh folder
            times[index].append(seconds([*executables[index], *words]))
    return times


def cell(times: list[float]) -> str:
    return f"{statistics.median(times):.2f} ({min(times):.2f}-{max(times):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--against", help="another install's vistra script (the 'before')")
    parser.add_argument(
        "--commands", action="append", help="one argument list, e.g. 'predict --help'"
    )
    options = parser.parse_args()
    executables = [vistra_executable()]
    if options.against:
        executables.insert(0, [options.against])
    with tempfile.TemporaryDirectory() as scratch:
        files = write_inputs(Path(scratch))
        if options.against:
            print("| command | before: median s (range) | after: median s (range) | runs |")
            print("|---|---|---|---|")
        else:
            print("| command | median s (range) | runs |\n|---|---|---|")
        for template in options.commands or COMMANDS:
            words = template.format(**files).split()
            times = timed(executables, words, options.runs, Path(files["out"]))
            shown = template.replace(str(ROOT) + "/", "")
            print(f"| `vistra {shown}` | {' | '.join(cell(t) for t in times)} | {options.runs} |")


if __name__ == "__main__":
    main()
