"""The ``vistra`` command.

``vistra fit|validate|test|predict --config FILE.yaml [--section.key=value ...]`` is Lightning's
``LightningCLI`` (jsonargparse, ``class_path`` / ``init_args``); ``vistra demo [NAME]`` runs a
built-in end-to-end job; ``vistra data shapes|check`` writes the built-in shapes set and
validates COCO files; ``vistra predict --ckpt CKPT --input ... --output DIR`` and ``vistra
export`` run and export a trained model from its checkpoint alone (``vistra.deploy_cli``).
"""

from __future__ import annotations

import sys

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

DEMOS = ("mask2former", "supcon", "detr", "mae")  # the first is the default


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


def data_command(words: list[str]) -> int:
    """``vistra data shapes OUT ...`` and ``vistra data check ANNOTATIONS --images DIR``."""
    import argparse

    parser = argparse.ArgumentParser(prog="vistra data")
    commands = parser.add_subparsers(dest="command", required=True)
    shapes = commands.add_parser("shapes", help="write the built-in shapes set (COCO formats)")
    shapes.add_argument("out", help="output folder")
    shapes.add_argument("--train", type=int, default=2000, help="training images")
    shapes.add_argument("--val", type=int, default=200, help="validation images")
    shapes.add_argument("--size", type=int, default=96, help="image side in pixels")
    shapes.add_argument("--seed", type=int, default=0)
    shapes.add_argument("--max-objects", type=int, default=3, help="things per image, at most")
    check = commands.add_parser("check", help="validate a COCO instance file before training")
    check.add_argument("annotations", help="COCO instance JSON")
    check.add_argument("--images", help="image folder (checks that every file exists)")
    options = parser.parse_args(words)
    if options.command == "shapes":
        from vistra.data.shapes import write_shapes

        written = write_shapes(options.out, options.train, options.val, options.size,
                               options.seed, options.max_objects)  # fmt: skip
        for split, paths in written.items():
            print(f"{split}: {paths['instances']} (images in {paths['images']})")
        return 0
    from vistra.data.coco_check import check_coco

    report = check_coco(options.annotations, options.images)
    print(report.table())
    for problem in report.problems:
        print(f"  {problem}")
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> None:
    words = sys.argv[1:] if argv is None else argv
    if words and words[0] == "data":
        sys.exit(data_command(words[1:]))
    if words and words[0] == "export":
        from vistra.deploy_cli import export_command

        sys.exit(export_command(words[1:]))
    if words and words[0] == "predict" and any(w.startswith("--ckpt=") or w == "--ckpt"
                                               for w in words):  # fmt: skip
        from vistra.deploy_cli import predict_command

        sys.exit(predict_command(words[1:]))
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
