"""Whole-process time of ``vistra`` commands, as a user waits for them: the help screens, and
the start-up of the commands that do work (``fit`` up to its resolved config, ``predict
--ckpt`` on one image, ``data shard`` of a two-image folder).

Each command runs in a fresh process (imports included), several times after one untimed run;
the median and the range are printed. ``--against OTHER/bin/vistra`` times another install
(an older commit's virtual environment) in alternating rounds with this one, for a before /
after table. ``--commands`` picks other argument lists (one per string; ``{ckpt}``,
``{image}``, ``{folder}`` and ``{out}`` name the files this script writes).

``--onnx``: ``vistra predict --ckpt model.onnx`` on one 640 x 480 photo against a plain
onnxruntime client (``CLIENT`` below: prepare, run, decode, write the JSON), both whole
processes in alternating rounds; wall time and peak resident memory (the child's own
``ru_maxrss``). The model is the README's DETR (ResNet-50, 6 + 6 layers, 100 queries, 800 /
1333) with random weights, exported by ``vistra export``.

    .venv/bin/python benchmarks/cli.py [--runs 7] [--against /tmp/old/.venv/bin/vistra]
    .venv/bin/python benchmarks/cli.py --onnx [--runs 5]
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


CLIENT = """
import json, sys
import numpy as np, onnxruntime
from PIL import Image
session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
pre = json.loads(session.get_modelmeta().custom_metadata_map["vistra"])["preprocess"]
image = Image.open(sys.argv[2]).convert("RGB")
width, height = image.size
short, long = min(width, height), max(width, height)
new_short, new_long = pre["size"], int(pre["size"] * long / short)
if new_long > pre["max_size"]:
    new_short, new_long = int(pre["max_size"] * new_short / new_long), pre["max_size"]
rows, cols = (new_short, new_long) if height <= width else (new_long, new_short)
x = np.asarray(image.resize((cols, rows), Image.BILINEAR), np.float32) / 255
x = ((x - pre["mean"]) / pre["std"]).astype(np.float32).transpose(2, 0, 1)[None]
logits, boxes = session.run(None, {"images": x, "pixel_mask": np.ones((1, rows, cols), bool)})
p = np.exp(logits[0] - logits[0].max(-1, keepdims=True))
p = (p / p.sum(-1, keepdims=True))[:, :-1]
cx, cy, w, h = boxes[0].T
xywh = np.stack([(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height], 1)
found = [{"bbox": b.tolist(), "score": float(s), "category_id": int(c)}
         for b, s, c in zip(xywh, p.max(1), p.argmax(1))]
open(sys.argv[3], "w").write(json.dumps(found))
"""


def write_onnx_inputs(folder: Path) -> dict[str, str]:
    """The README's DETR (random weights) exported by ``vistra export``, and a photo-sized
    image."""
    import numpy as np
    import torch
    from PIL import Image

    from vistra.inference.checkpoint import NETWORK_KEY, network_spec
    from vistra.inference.spec import PREPROCESS_KEY
    from vistra.models import DETR

    torch.manual_seed(0)
    network = DETR(91).eval()
    state = {f"network.{k}": v for k, v in network.state_dict().items()}
    preprocess = {"resize": "shorter_side", "size": 800, "max_size": 1333}
    checkpoint = {NETWORK_KEY: network_spec(network), "state_dict": state,
                  PREPROCESS_KEY: preprocess}  # fmt: skip
    torch.save(checkpoint, folder / "detr.ckpt")
    pixels = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "photo.jpg")
    export = [*vistra_executable(), "export", "--ckpt", str(folder / "detr.ckpt"), "--output",
              str(folder / "detr.onnx")]  # fmt: skip
    subprocess.run(export, check=True, capture_output=True)
    return {"model": str(folder / "detr.onnx"), "image": str(folder / "photo.jpg")}


# A child's peak resident memory starts from its parent's at fork: measure through a small
# launcher process, which reports its one child's peak (KiB) on its last line.
LAUNCHER = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
if done.returncode:
    sys.exit(done.stderr.decode()[-2000:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def seconds_and_peak(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of one process (the launcher's start-up, about
    0.02 s, included on both sides)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, *command], capture_output=True,
                          text=True)  # fmt: skip
    elapsed = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return elapsed, int(done.stdout.split()[-1]) / 1024


def onnx_table(runs: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        files = write_onnx_inputs(Path(scratch))
        sides = {
            "vistra predict --ckpt detr.onnx": [*vistra_executable(), "predict", "--ckpt",
                                                files["model"], "--input", files["image"],
                                                "--output", f"{scratch}/out"],
            "plain onnxruntime client": [sys.executable, "-c", CLIENT, files["model"],
                                         files["image"], f"{scratch}/client.json"],
        }  # fmt: skip
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
        for command in sides.values():
            seconds_and_peak(command)  # warm the file cache, untimed
        for round_index in range(runs):
            names = list(sides)[:: -1 if round_index % 2 else 1]
            for name in names:
                results[name].append(seconds_and_peak(sides[name]))
    print("| process | wall s median (range) | peak MiB median |\n|---|---|---|")
    for name, values in results.items():
        times = [t for t, _ in values]
        print(f"| {name} | {cell(times)} | {statistics.median(m for _, m in values):.0f} |")
    ours, theirs = (statistics.median(t for t, _ in v) for v in results.values())
    print(f"time ratio vistra / client: {ours / theirs:.2f}x ({runs} alternating rounds)")


def cell(times: list[float]) -> str:
    return f"{statistics.median(times):.2f} ({min(times):.2f}-{max(times):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--against", help="another install's vistra script (the 'before')")
    parser.add_argument(
        "--commands", action="append", help="one argument list, e.g. 'predict --help'"
    )
    parser.add_argument("--onnx", action="store_true", help="predict from an ONNX file against "
                        "a plain onnxruntime client")  # fmt: skip
    options = parser.parse_args()
    if options.onnx:
        return onnx_table(options.runs)
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
