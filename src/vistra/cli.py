"""The ``vistra`` command.

``vistra fit|validate|test|predict --config FILE.yaml [--section.key=value ...]`` is Lightning's
``LightningCLI`` (jsonargparse, ``class_path`` / ``init_args``); ``vistra demo [NAME]`` runs a
built-in end-to-end job.
"""

from __future__ import annotations

import sys

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

DEMOS = ("supcon", "mae")  # the first is the default


class VistraCLI(LightningCLI):
    """LightningCLI with a checkpoint callback that always keeps ``last.ckpt`` for resuming."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True})


def main(argv: list[str] | None = None) -> None:
    words = sys.argv[1:] if argv is None else argv
    if words and words[0] == "demo":
        from vistra.demo import run_demo

        name = words[1] if len(words) > 1 else DEMOS[0]
        if name not in DEMOS:
            sys.exit(f"vistra demo: unknown demo {name!r}; choose from {', '.join(DEMOS)}")
        run_demo(name, *words[2:])
        return
    VistraCLI(args=argv)  # None: LightningCLI reads sys.argv itself


if __name__ == "__main__":
    main()
