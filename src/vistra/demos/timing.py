"""The demos' "where the time went" rows, from each ``vistra fit``'s ``TimeBudget``."""

from __future__ import annotations

from vistra.engine.time_budget import PARTS, duration, time_budget


def time_rows(runs: list, before: float = 0.0, after: float = 0.0) -> tuple[list, dict]:
    """Summed over the demo's fits (``VistraCLI`` objects): rows ``(label, text)`` and the
    seconds by part. ``before``: writing the data set; ``after``: the demo's own evaluation
    outside the fits (probes, pictures), counted as evaluation."""
    seconds = {"data set written": before, **dict.fromkeys(PARTS, 0.0), "other": 0.0}
    for run in runs:
        budget = time_budget(run.trainer)
        if budget is not None:
            split = budget.split()
            for part in (*PARTS, "other"):
                seconds[part] += split[part]
    seconds["evaluation"] += after
    labels = {"data set written": "time: writing the data set", "data": "  loading batches",
              "training": "  training steps", "evaluation": "  evaluation",
              "other": "  other (start-up, checkpoints)"}  # fmt: skip
    total = sum(seconds.values())
    rows = [(labels[part], f"{duration(value)} ({value / total:.0%})" if total else "0 s")
            for part, value in seconds.items()]  # fmt: skip
    rows.append(("  total", duration(total)))
    return rows, seconds
