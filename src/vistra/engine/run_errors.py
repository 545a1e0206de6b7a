"""Why a run cannot go on for a reason outside the code: its folder is in use by another
run, its disk is full or read-only. The command prints the message as one line."""


class RunError(RuntimeError):
    """A run stopped by its surroundings; the message names the file or folder."""


class RunLockError(RunError):
    """The run folder is in use by another live ``vistra fit``."""


class CheckpointWriteError(RunError):
    """A checkpoint could not be written (no space left, read-only, permissions)."""
