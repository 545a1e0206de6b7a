"""The ``vistra`` command.

``vistra fit|validate|test|predict --config FILE.yaml [--section.key=value ...]`` is Lightning's
``LightningCLI`` (``vistra.engine.lightning_cli``); ``vistra predict --ckpt CKPT --input ...``
and ``vistra export`` run a trained model from its checkpoint alone (``vistra.inference.command``);
``vistra data`` and ``vistra demo`` are the built-in data and demos. Heavy imports happen only
once a command is chosen, so ``--help`` answers at once.
"""

from __future__ import annotations

import os
import sys

from vistra.demos import NAMES as DEMOS  # the first is the default

OVERVIEW = """\
usage: vistra COMMAND [options]

MAE, SupCon, DETR and Mask2Former on your own images.

commands:
  fit        train from a YAML config: vistra fit --config FILE.yaml [--key=value ...]
             (--ckpt_path last resumes the newest run in its own directory)
  validate   evaluate a checkpoint on a config's validation data (--ckpt_path CKPT)
  test       the same on the config's test data
  predict    run a trained model on images: --ckpt CKPT --input IMAGES --output DIR,
             or on a config's data: --config FILE.yaml --ckpt_path CKPT
  export     write an ONNX file or torch.export program and check it against PyTorch
  serve      a model behind HTTP with a page to try it: --ckpt CKPT|model.onnx [--port 8000]
  data       write the built-in shapes set (data shapes), check a COCO file (data check),
             write images into tar shards (data shard)
  demo       a built-in end-to-end run: mask2former (default), supcon, mae, detr

'vistra COMMAND --help' shows a command's options; 'vistra fit --config FILE.yaml
--print_config' the whole resolved config.
"""

PREDICT_HELP = """\
usage: vistra predict --ckpt CKPT --input IMAGES --output DIR [options]
       vistra predict --config FILE.yaml --ckpt_path CKPT [--key=value ...]

From a checkpoint alone (no config, no training stack): the checkpoint holds the network,
its preprocessing and the category names.
{ckpt_options}
From a config (Lightning's predict on the config's held-out data; the same files):
  --config FILE.yaml    the training config
  --ckpt_path CKPT      the checkpoint to load ('last': the newest run's last.ckpt)
  --predictions.output DIR
                        folder for the files (default: the run directory's predictions/)
  --predictions.threshold T
                        as --threshold above
  'vistra predict --config FILE.yaml --help' lists every config key.
"""

DEMO_HELP = f"""\
usage: vistra demo [{"|".join(DEMOS)}]

Built-in end-to-end runs on data written on the spot (nothing is downloaded); each prints its
metrics and where its time went, and draws pictures under vistra_runs/.
  mask2former   (default) Mask2Former on the shapes set: PQ, mask AP, mIoU, a picture
  supcon        SupCon + linear probe on digits
  mae           MAE pre-training of a ViT-Tiny on digits, its linear probe, reconstructions
  detr          box-map backbone pre-training then DETR on 64-pixel shapes, COCO box AP
"""


def wants_help(words: list[str]) -> bool:
    return any(word in ("-h", "--help") for word in words)


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
    check.add_argument("--images", help="image folder (checks that every file exists and has "
                       "the size the file gives)")  # fmt: skip
    shard = commands.add_parser("shard", help="write an image folder, list file or COCO "
                                "instance / panoptic set into tar shards")  # fmt: skip
    shard.add_argument("source", help="a folder of class sub-folders, any image folder with "
                       "--unlabelled, a list file, or a COCO instance / panoptic JSON with "
                       "--images")  # fmt: skip
    shard.add_argument("--images", help="with a COCO JSON: the folder its file_name entries are "
                       "in")  # fmt: skip
    shard.add_argument("--panoptic-pngs", help="with a panoptic JSON: its PNG folder (default: "
                       "the JSON path without .json)")  # fmt: skip
    shard.add_argument("out", help="output folder")
    shard.add_argument("--shard-size", type=int, default=1000, help="images per shard")
    shard.add_argument("--unlabelled", action="store_true", help="every image under the "
                       "folder, at any depth, without labels")  # fmt: skip
    options = parser.parse_args(words)
    if options.command == "shard":
        return shard_command(options)
    if options.command == "shapes":
        from vistra.data.shapes import write_shapes

        written = write_shapes(options.out, options.train, options.val, options.size,
                               options.seed, options.max_objects)  # fmt: skip
        for split, paths in written.items():
            print(f"{split}: {paths['instances']} (images in {paths['images']})")
        return 0
    from vistra.data.coco_check import check_coco

    report = check_coco(options.annotations, options.images, image_sizes=True)
    print(report.table())
    for problem in report.problems:
        print(f"  {problem}")
    for warning in report.warnings:
        print(f"  warning: {warning}")
    return 0 if report.ok else 1


def shard_command(options) -> int:
    from pathlib import Path

    from vistra.data.shard_writer import write_shards
    from vistra.data.sources.base import DataError

    source_path = Path(options.source)
    try:
        if options.images or source_path.suffix.lower() == ".json":
            return shard_annotated_command(options)
        if source_path.is_file():
            from vistra.data.sources.list_file import ListFileSource as kind
        elif options.unlabelled:
            from vistra.data.sources.unlabelled_folder import UnlabelledFolderSource as kind
        else:
            from vistra.data.sources.image_folder import ImageFolderSource as kind
        index = write_shards(kind(source_path), options.out, options.shard_size)
    except (FileNotFoundError, ValueError, DataError) as error:
        print(f"vistra data shard: {error}", file=sys.stderr)
        return 2
    print(f"wrote {index.parent} (read it with vistra.data.ShardSource)")
    return 0


def shard_annotated_command(options) -> int:
    from vistra.data.annotated_shards import shard_annotated_set

    if not options.images:
        print(f"vistra data shard: {options.source}: a COCO file needs --images FOLDER",
              file=sys.stderr)  # fmt: skip
        return 2
    written = shard_annotated_set(options.source, options.images, options.out,
                                  options.shard_size, options.panoptic_pngs)  # fmt: skip
    print(f"wrote {options.out}: train or validate on it with")
    print(f"  --data.init_args.train_annotations {written['annotations']} "
          f"--data.init_args.train_images {written['images']}")  # fmt: skip
    print("  (or val_annotations / val_images)")
    return 0


def predict_help() -> str:
    from vistra.inference.command import predict_parser

    options = predict_parser().format_help().split("options:", 1)[-1]
    return PREDICT_HELP.format(ckpt_options=options.rstrip() + "\n")


def silence_known_noise() -> None:
    """Third-party messages that say nothing about the user's run."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*`tensorboardX` has been removed.*")
    # The demos hand LightningCLI their own arguments while sys.argv holds "demo".
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended.*")

    class DropTips(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "litlogger" not in record.getMessage()

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning_utilities.core.rank_zero"):
        logging.getLogger(name).addFilter(DropTips())


def main(argv: list[str] | None = None) -> None:
    words = sys.argv[1:] if argv is None else argv
    command = words[0] if words else None
    if command is None or command in ("-h", "--help", "help"):
        print(OVERVIEW, end="")
        return
    if command == "data":
        sys.exit(data_command(words[1:]))
    if command == "serve":
        from vistra.serve.command import serve_command

        sys.exit(serve_command(words[1:]))
    if command == "export":
        from vistra.inference.command import export_command

        sys.exit(export_command(words[1:]))
    if command == "predict" and any(w == "--ckpt" or w.startswith("--ckpt=") for w in words):
        from vistra.inference.command import predict_command

        sys.exit(predict_command(words[1:]))
    if command == "predict" and wants_help(words) and "--config" not in words:
        print(predict_help(), end="")
        return
    if command == "demo":
        if wants_help(words):
            print(DEMO_HELP, end="")
            return
        from vistra.demos import run_demo

        named = len(words) > 1 and not words[1].startswith("-")
        name, overrides = (words[1], words[2:]) if named else (DEMOS[0], words[1:])
        if name not in DEMOS:
            sys.exit(f"vistra demo: unknown demo {name!r}; choose from {', '.join(DEMOS)}")
        silence_known_noise()
        run_demo(name, *overrides)
        return
    silence_known_noise()
    lightning_command(argv)


def lightning_command(argv: list[str] | None) -> None:
    """``vistra fit|validate|test|predict --config``: Lightning's CLI, each refusal one line."""
    from vistra.convert.files import CheckpointMismatchError
    from vistra.convert.safe import UnsafeFileError
    from vistra.data.sources.base import DataError
    from vistra.engine.finite import NonFiniteTrainingError
    from vistra.engine.lightning_cli import VistraCLI
    from vistra.engine.preemption import Preempted
    from vistra.engine.run_errors import RunError

    errors = (UnsafeFileError, NonFiniteTrainingError, DataError, CheckpointMismatchError, RunError)
    try:
        VistraCLI(args=argv)  # None: LightningCLI reads sys.argv itself
    except errors as error:
        sys.exit(f"vistra: {one_line(error)}")
    except OSError as error:
        if error.filename is None:  # not a file the run could not read or write
            raise
        sys.exit(f"vistra: {error.filename}: {error.strerror} (a folder the run writes to, "
                 "or a file it reads)")  # fmt: skip
    except Preempted as stop:
        print(f"vistra: {stop.message}", file=sys.stderr)
        sys.exit(0)
    except Exception as error:
        if not lightning_refusal(error):
            raise
        sys.exit(f"vistra: {' '.join(str(error).split())}")


def lightning_refusal(error: Exception) -> bool:
    """An option Lightning itself refuses (``--trainer.val_check_interval`` beyond the epoch,
    a strategy this machine cannot run): a ``ValueError`` or ``MisconfigurationException``
    raised in Lightning's own code, whose message names the option."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    if not isinstance(error, (ValueError, MisconfigurationException)):
        return False
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is not None and f"{os.sep}lightning{os.sep}" in frame.tb_frame.f_code.co_filename


def one_line(error: Exception) -> str:
    """The message of an error, also when a DataLoader worker raised it: torch then re-raises
    it with the worker's traceback in front, and the message is its last line."""
    message = str(error)
    if "Original Traceback" not in message:
        return message
    last = message.rstrip().splitlines()[-1]
    name = type(error).__name__
    for prefix in (f"{type(error).__module__}.{name}: ", f"{name}: "):
        if last.startswith(prefix):
            return last[len(prefix) :]
    return last


def __getattr__(name: str):
    # ``from vistra.cli import VistraCLI`` keeps working without importing Lightning here.
    if name == "VistraCLI":
        from vistra.engine.lightning_cli import VistraCLI

        return VistraCLI
    raise AttributeError(f"module 'vistra.cli' has no attribute {name!r}")


if __name__ == "__main__":
    main()
