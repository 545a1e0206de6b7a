"""Timing, peak-memory and matmul-peak helpers shared by the benchmark scripts."""

from __future__ import annotations

import resource
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


def peak_memory_mib(script: str, case: str) -> float:
    """Peak extra resident memory (MiB) of one call of ``case``, in a fresh interpreter.

    CPU PyTorch has no allocator peak counter, so ``python script --peak case`` builds the inputs,
    then reports the growth of the kernel's high-water mark (ru_maxrss) over one call (see
    ``report_peak``). On CUDA use torch.cuda.max_memory_allocated instead.
    """
    result = subprocess.run(
        [sys.executable, script, "--peak", case], capture_output=True, text=True, check=True
    )
    return float(result.stdout.strip().splitlines()[-1])


def report_peak(make: Callable[[], Callable[[], object]]) -> None:
    """Child side of ``peak_memory_mib``: print the peak growth in MiB."""
    fn = make()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)


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
