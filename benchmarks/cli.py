"""Whole-process time of the ``vistra`` help screens, as a user waits for them.

Each command runs in a fresh process (imports included), several times; the median and the
range are printed. ``--commands`` picks other argument lists (one per string).

    .venv/bin/python benchmarks/cli.py [--runs 7]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = ["--help", "predict --help", "data --help"]


def vistra_executable() -> list[str]:
    beside_python = Path(sys.executable).with_name("vistra")
    if beside_python.exists():
        return [str(beside_python)]
    found = shutil.which("vistra")
    return [found] if found else [sys.executable, "-m", "vistra.cli"]


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--commands", action="append", help="one argument list, e.g. 'predict --help'"
    )
    options = parser.parse_args()
    executable = vistra_executable()
    print("| command | median s | range s | runs |\n|---|---|---|---|")
    for words in options.commands or COMMANDS:
        command = [*executable, *words.split()]
        seconds(command)  # warm the file cache once, untimed
        times = [seconds(command) for _ in range(options.runs)]
        print(
            f"| `vistra {words}` | {statistics.median(times):.2f} | "
            f"{min(times):.2f}-{max(times):.2f} | {options.runs} |"
        )


if __name__ == "__main__":
    main()
