"""One run, one writer: ``vistra fit`` holds ``<run folder>/vistra.lock`` while it trains.

A second ``vistra fit`` of the same run folder (two new runs started at once, which pick the
same ``version_N``, or two resumes of one run) stops with one line naming the holder. A lock
left by a process that is gone (``kill -9``, a power cut) on this host is taken over with a
message; one of another host is not (its process cannot be seen from here). Holding the lock,
the run removes its own stale temporary checkpoints (``.<name>.<pid>.tmp``, left by a kill
during a write).
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import sys
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from vistra.engine.run_errors import RunLockError

LOCK_NAME = "vistra.lock"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    state = Path(f"/proc/{pid}/stat")
    try:  # a zombie has ended: only its parent has not collected it yet
        return state.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def acquire(folder: Path) -> Path:
    """Take ``folder/vistra.lock`` (``RunLockError`` if a live process holds it)."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    for _ in range(3):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            pid = holder.get("pid") if isinstance(holder.get("pid"), int) else -1
            if holder.get("host") == me["host"] and pid == me["pid"]:  # an earlier run of ours
                lock.unlink(missing_ok=True)
                continue
            if holder.get("host") == me["host"] and not pid_alive(pid):
                print(f"vistra: {lock} was left by process {holder.get('pid')}, which has "
                      "ended: taking the run over", file=sys.stderr)  # fmt: skip
                lock.unlink(missing_ok=True)
                continue
            raise RunLockError(
                f"{folder} is in use by another vistra fit (process {holder.get('pid')} on "
                f"{holder.get('host')}); wait for it to end, or train into another folder "
                f"(--trainer.default_root_dir)"
            ) from None
        with os.fdopen(descriptor, "w") as handle:
            json.dump(me, handle)
        return lock
    raise RunLockError(f"{lock}: could not take the lock")


def _holder(lock: Path) -> dict:
    try:
        holder = json.loads(lock.read_text())
    except (OSError, ValueError):
        holder = {}
    return holder if isinstance(holder, dict) else {}


def release(lock: Path) -> None:
    """Remove ``lock`` if this process holds it."""
    if _holder(lock).get("pid") == os.getpid():
        lock.unlink(missing_ok=True)


def remove_stale_temporaries(checkpoints: Path) -> int:
    """Delete ``.<name>.<pid>.tmp`` files of processes that are gone; how many."""
    removed = 0
    for path in checkpoints.glob(".*.tmp") if checkpoints.is_dir() else []:
        pid = path.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not pid_alive(int(pid)):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


class RunLock(Callback):
    """Holds the run folder's lock from the start of ``fit`` to its end (rank 0: the one
    process that writes checkpoints and logs), and clears the run's stale temporaries."""

    def __init__(self) -> None:
        self.lock: Path | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero or trainer.logger is None:
            return
        folder = Path(trainer.logger.log_dir)
        self.lock = acquire(folder)
        atexit.register(release, self.lock)
        removed = remove_stale_temporaries(folder / "checkpoints")
        if removed:
            where = folder / "checkpoints"
            print(f"vistra: removed {removed} temporary checkpoint file(s) left in {where} by a "
                  "run that was killed", file=sys.stderr)  # fmt: skip

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self.lock is not None:
            release(self.lock)
            self.lock = None
