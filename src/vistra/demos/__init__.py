"""``vistra demo NAME``: built-in end-to-end runs on data written on the spot or shipped with
the dependencies (nothing is downloaded): ``mask2former`` and ``detr`` on the shapes set,
``supcon`` and ``mae`` on the digits (``probe``)."""

from __future__ import annotations

from pathlib import Path

NAMES = ("mask2former", "supcon", "detr", "mae")  # the first is the default


def run_demo(name: str, *extra_args: str, out_dir: str | Path = "vistra_runs") -> dict:
    """Run demo ``name`` into ``out_dir/demo_<name>``; ``extra_args`` override its config."""
    out = Path(out_dir) / f"demo_{name}"
    if name == "detr":
        from vistra.demos.detr import run_detr_demo

        return run_detr_demo(out, *extra_args)
    if name == "mask2former":
        from vistra.demos.mask2former import run_mask2former_demo

        return run_mask2former_demo(out, *extra_args)
    if name not in NAMES:
        raise ValueError(f"unknown demo {name!r}; choose from {', '.join(NAMES)}")
    from vistra.demos.probe import pretrain_and_probe

    return pretrain_and_probe(name, out, *extra_args)
