"""Timing, peak-memory and matmul-peak helpers shared by the benchmark scripts."""

from __future__ import annotations

import multiprocessing as mp
import resource
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


def _peak_child(make: Callable[[], Callable[[], object]], queue) -> None:
    fn = make()
    fn()  # first call allocates caches/workspaces too
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    queue.put((before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def peak_memory_mib(make: Callable[[], Callable[[], object]]) -> float:
    """Peak resident memory (MiB) of ``make()()`` measured in a forked child process.

    CPU PyTorch has no allocator peak counter, so each case runs in its own fork and we read the
    kernel's high-water mark (ru_maxrss) once the inputs exist: the growth it reports is the peak
    extra memory of one call. On CUDA use torch.cuda.max_memory_allocated instead.
    """
    context = mp.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_peak_child, args=(make, queue))
    child.start()
    before, after = queue.get()
    child.join()
    base = _baseline_rss_kib(make)
    return max(after - base, after - before) / 1024


def _baseline_rss_kib(make) -> int:
    context = mp.get_context("fork")
    queue = context.Queue()

    def only_setup(q):
        make()
        q.put(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)

    child = context.Process(target=only_setup, args=(queue,))
    child.start()
    value = queue.get()
    child.join()
    return value


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
