"""Timing, peak-memory and matmul-peak helpers shared by the benchmark scripts."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import subprocess
import sys
import time
from collections.abc import Callable

import torch


def seconds_per_call(fn: Callable[[], object], warmup: int = 2, repeat: int = 5) -> float:
    """Median wall time of ``fn()`` over ``repeat`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def interleaved_seconds(
    fns: dict[str, Callable[[], object]], warmup: int = 1, repeat: int = 8
) -> dict[str, list[float]]:
    """Wall times of each ``fns[name]()`` over ``repeat`` rounds, the calls taking turns.

    Each round calls every function once, in an order that reverses every round (A B, B A,
    ...), so slow spells of a shared machine hit both sides alike; compare sides with
    ``round_ratios`` (the median of per-round ratios), not the ratio of separate medians.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for round_index in range(repeat):
        for name in names if round_index % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def round_ratios(numerator: list[float], denominator: list[float]) -> tuple[str, str]:
    """Per-round ratios of ``interleaved_seconds`` times: ("1.15x" median, "1.04-1.29" range)."""
    ratios = [a / b for a, b in zip(numerator, denominator)]
    return f"{median(ratios):.2f}x", f"{min(ratios):.2f}-{max(ratios):.2f}"


def peak_memory_mib(script: str, case: str) -> float:
    """Peak extra resident memory (MiB) of one call of ``case``, in a fresh interpreter.

    CPU PyTorch has no allocator peak counter, so ``python script --peak case`` builds the inputs,
    resets the kernel's peak-RSS mark (/proc/self/clear_refs), runs one call and reports the
    peak minus the resident size just before it (see ``report_peak``). On CUDA use
    torch.cuda.max_memory_allocated instead.
    """
    result = subprocess.run(
        [sys.executable, script, "--peak", case], capture_output=True, text=True, check=True
    )
    return float(result.stdout.strip().splitlines()[-1])


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap memory back to the OS (glibc ``malloc_trim``), so a
    peak-memory child started next does not compete with memory this process no longer uses
    (ViT-L runs came near the 24 GiB limit without it)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def report_peak(make: Callable[[], Callable[[], object]]) -> None:
    """Child side of ``peak_memory_mib``: print the peak growth in MiB over one call."""
    fn = make()
    gc.collect()
    with open("/proc/self/clear_refs", "w") as clear:  # Linux: reset the peak (VmHWM) to now
        clear.write("5")
    before = _status_kib("VmRSS")
    fn()
    print((_status_kib("VmHWM") - before) / 1024)


def matmul_peak_flops(dtype: torch.dtype, size: int = 2048, repeat: int = 5) -> float:
    """Achieved FLOP/s of a square matmul: this machine's practical peak for ``dtype``."""
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    seconds = seconds_per_call(lambda: a @ b, warmup=2, repeat=repeat)
    return 2 * size**3 / seconds


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in rows])  # fmt: skip


def _status_kib(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS: now, VmHWM: peak), in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75)]  # fmt: skip


def line_chart(panels: list[dict], path, size: tuple[int, int] = (640, 420)):
    """Panels side by side, each ``{"title", "x_label", "lines": [(label, xs, ys)]}`` with y in
    0..1, drawn with PIL (the project draws its pictures without a plotting library)."""
    from pathlib import Path

    from PIL import Image, ImageDraw

    width, height = size
    margin = 60
    canvas = Image.new("RGB", (width * len(panels), height), "white")
    draw = ImageDraw.Draw(canvas)
    for index, panel in enumerate(panels):
        left = index * width
        last_x = max(max(xs) for _, xs, _ in panel["lines"]) * 1.05 or 1.0

        def at(x: float, y: float, left=left, last_x=last_x) -> tuple[float, float]:
            return (left + margin + (width - 2 * margin) * x / last_x,
                    height - margin - (height - 2 * margin) * y)  # fmt: skip

        draw.rectangle([left + margin, margin, left + width - margin, height - margin],
                       outline="black")  # fmt: skip
        for tick in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
            x, y = at(0, tick)
            draw.line([x - 4, y, x, y], fill="black")
            draw.text((x - 30, y - 6), f"{tick:.1f}", fill="black")
        step = max(1, round(last_x / 8))
        for value in range(0, int(last_x) + 1, step):
            x, y = at(value, 0)
            draw.line([x, y, x, y + 4], fill="black")
            draw.text((x - 4, y + 8), str(value), fill="black")
        draw.text((left + margin, height - 28), panel["x_label"], fill="black")
        draw.text((left + 8, 20), panel["title"], fill="black")
        for number, (label, xs, ys) in enumerate(panel["lines"]):
            colour = COLOURS[number % len(COLOURS)]
            points = [at(x, y) for x, y in zip(xs, ys)]
            if len(points) > 1:
                draw.line(points, fill=colour, width=3)
            for x, y in points:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
            draw.text((left + margin + 8, margin + 8 + 15 * number), label, fill=colour)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
