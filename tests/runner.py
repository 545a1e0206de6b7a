"""``vistra`` as the tests run it: ``vistra.cli.main(argv)``, the function the installed script
calls, in the test process, isolated as a process would be.

A fresh ``vistra`` process pays several seconds of imports before it does anything; most
command tests check what the command does, not the process it runs in, so they share this
process's imports. What a process would give each run of its own is set up before the call
and restored after it: the working folder, the environment, ``sys.argv``, signal handlers,
the global random generators (torch's at its fixed start-up seed, numpy's and Python's from
entropy), torch's global switches, warnings filters as a fresh interpreter has them (pytest
records warnings instead of printing them), logging handlers and levels, and Lightning's
rank. ``stdout`` and ``stderr`` are captured both as Python streams and as file descriptors
(what C code writes), and the exit code follows the interpreter's rules: ``sys.exit("text")``
prints the text and gives 1, an uncaught exception prints its traceback and gives 1.

``VISTRA_TEST_SUBPROCESS=1`` runs every call in a ``python -m vistra.cli`` subprocess instead.
Tests where the process itself is the behaviour (signals, kill, torchrun, start-up imports)
use ``subprocess`` directly.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SUBPROCESS = os.environ.get("VISTRA_TEST_SUBPROCESS") == "1"
TORCH_START_SEED = 67280421310721  # torch.initial_seed() of a fresh interpreter
# The filters of an interpreter started without -W options (the warnings module's docs).
FRESH_FILTERS = [
    ("default", DeprecationWarning, "__main__"),
    ("ignore", DeprecationWarning, None),
    ("ignore", PendingDeprecationWarning, None),
    ("ignore", ImportWarning, None),
    ("ignore", ResourceWarning, None),
]


@dataclass
class Ran:
    """What a finished ``vistra`` run left: the shape of ``subprocess.CompletedProcess``."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def run_vistra(*args, cwd: Path | str, env: dict[str, str] | None = None) -> Ran:
    """``vistra ARGS`` in ``cwd`` with ``env`` added to the environment."""
    words = [str(arg) for arg in args]
    if SUBPROCESS or launches_processes(words):
        done = subprocess.run([sys.executable, "-m", "vistra.cli", *words], cwd=cwd,
                              env={**os.environ, **(env or {})}, capture_output=True,
                              text=True)  # fmt: skip
        return Ran(words, done.returncode, done.stdout, done.stderr)
    return run_in_process(words, Path(cwd), env or {})


def installed_script() -> list[str]:
    """The ``vistra`` script pip installed beside this interpreter (what a user types)."""
    beside_python = Path(sys.executable).with_name("vistra")
    found = str(beside_python) if beside_python.exists() else shutil.which("vistra")
    assert found, "the vistra script is not installed (pip install -e .)"
    return [found]


def run_script(*args, cwd: Path | str) -> Ran:
    """``vistra ARGS`` through the installed script, in a process of its own."""
    words = [str(arg) for arg in args]
    done = subprocess.run([*installed_script(), *words], cwd=cwd, capture_output=True, text=True)
    return Ran(words, done.returncode, done.stdout, done.stderr)


def launches_processes(words: list[str]) -> bool:
    """Lightning starts the other ranks of a multi-device run by running this process's command
    line again, which only a real ``vistra`` process has."""
    for word in words:
        key, _, value = word.partition("=")
        if key == "--trainer.devices" and value not in ("1", "auto", "[0]"):
            return True
        if key == "--trainer.strategy" and value.startswith(("ddp", "fsdp")):
            return True
    return False


def run_in_process(words: list[str], cwd: Path, env: dict[str, str]) -> Ran:
    from vistra.cli import main

    out, err = io.StringIO(), io.StringIO()
    streams = (sys.stdout, sys.stderr)
    with (
        process_state(cwd, env, ["vistra", *words]),
        captured_descriptors() as written,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        fresh_warnings(),
        fresh_logging(out, err, streams),
    ):
        code = exit_code(main, words)
    return Ran(words, code, out.getvalue() + written[1], err.getvalue() + written[2])


def exit_code(main, words: list[str]) -> int:
    try:
        main(words)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        raise
    except BaseException:
        traceback.print_exc(file=sys.stderr)
        return 1
    return 0


@contextlib.contextmanager
def process_state(cwd: Path, env: dict[str, str], argv: list[str]) -> Iterator[None]:
    """Working folder, environment, argv, signal handlers, random generators, torch switches
    and Lightning's rank: a fresh process's during the run, this process's after it."""
    import numpy as np
    import torch

    folder, environment, old_argv = os.getcwd(), dict(os.environ), sys.argv
    handlers = signal_handlers()
    generators = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    switches = torch_switches()
    ranks = lightning_ranks()
    try:
        os.chdir(cwd)
        os.environ.update(env)
        sys.argv = argv
        torch.manual_seed(TORCH_START_SEED)
        np.random.seed(None)
        random.seed()
        set_lightning_ranks(dict.fromkeys(ranks, 0))
        yield
    finally:
        os.chdir(folder)
        os.environ.clear()
        os.environ.update(environment)
        sys.argv = old_argv
        for number, handler in handlers.items():
            if signal.getsignal(number) is not handler:
                signal.signal(number, handler)
        torch.set_rng_state(generators[0])
        np.random.set_state(generators[1])
        random.setstate(generators[2])
        restore_torch_switches(switches)
        set_lightning_ranks(ranks)
        gc.collect()


def signal_handlers() -> dict[int, object]:
    handlers = {}
    for number in signal.valid_signals():
        with contextlib.suppress(ValueError, OSError):
            handler = signal.getsignal(number)
            if handler is not None:
                handlers[number] = handler
    return handlers


def torch_switches() -> dict:
    import torch

    return {
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "matmul": torch.get_float32_matmul_precision(),
        "dtype": torch.get_default_dtype(),
        "grad": torch.is_grad_enabled(),
        "cudnn": (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic),
    }


def restore_torch_switches(switches: dict) -> None:
    import torch

    torch.set_num_threads(switches["threads"])
    torch.use_deterministic_algorithms(switches["deterministic"], warn_only=switches["warn_only"])
    torch.set_float32_matmul_precision(switches["matmul"])
    torch.set_default_dtype(switches["dtype"])
    torch.set_grad_enabled(switches["grad"])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = switches["cudnn"]


def lightning_ranks() -> dict[object, int]:
    """The ``rank_zero_only.rank`` holders Lightning has imported (a Trainer sets them)."""
    holders = {}
    for name in ("lightning.fabric.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero",
                 "lightning_utilities.core.rank_zero"):  # fmt: skip
        module = sys.modules.get(name)
        holder = getattr(module, "rank_zero_only", None)
        if holder is not None:
            holders[holder] = getattr(holder, "rank", 0)
    return holders


def set_lightning_ranks(ranks: dict[object, int]) -> None:
    for holder, rank in ranks.items():
        holder.rank = rank


@contextlib.contextmanager
def captured_descriptors() -> Iterator[dict[int, str]]:
    """What is written to file descriptors 1 and 2 (C code, child processes) during the run."""
    text: dict[int, str] = {1: "", 2: ""}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        files, saved = {1: out, 2: err}, {}
        for number, file in files.items():
            with contextlib.suppress(OSError, ValueError):
                (sys.__stdout__ if number == 1 else sys.__stderr__).flush()
            saved[number] = os.dup(number)
            os.dup2(file.fileno(), number)
        try:
            yield text
        finally:
            for number, file in files.items():
                os.dup2(saved[number], number)
                os.close(saved[number])
                file.seek(0)
                text[number] = file.read().decode(errors="replace")


@contextlib.contextmanager
def fresh_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.resetwarnings()
        for action, category, module in reversed(FRESH_FILTERS):
            warnings.filterwarnings(action, category=category, module=module or "")
        # pytest records warnings (catch_warnings(record=True)) instead of printing them.
        warnings.showwarning = warnings._showwarning_orig
        warnings._showwarnmsg_impl = print_warning
        yield


def print_warning(message: warnings.WarningMessage) -> None:
    """What an interpreter does with a warning that is shown: its text on stderr."""
    (message.file or sys.stderr).write(warnings._formatwarnmsg(message))


@contextlib.contextmanager
def fresh_logging(out: io.StringIO, err: io.StringIO, streams: tuple) -> Iterator[None]:
    """The root logger as a fresh process has it (no handlers of pytest's; messages that
    reach it printed to stderr), every logger's level, handlers, filters restored after, and
    stream handlers writing to the captured streams during the run (``streams``: this
    process's stdout and stderr before the capture)."""
    manager = logging.root.manager
    loggers = [logging.root, *(x for x in manager.loggerDict.values()
                               if isinstance(x, logging.Logger))]  # fmt: skip
    saved = [(x, x.level, list(x.handlers), list(x.filters), x.propagate) for x in loggers]
    streams = []
    for logger in loggers[1:]:
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler:
                streams.append((handler, handler.stream))
                handler.setStream(out if handler.stream in (streams[0], sys.__stdout__) else err)
    logging.root.handlers = [logging.StreamHandler(err)]
    logging.root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level, handlers, filters, propagate in saved:
            logger.setLevel(level)
            logger.handlers, logger.filters, logger.propagate = handlers, filters, propagate
        for handler, stream in streams:
            handler.setStream(stream)
