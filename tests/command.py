"""What the command tests share: the data arguments of a shapes set written by the test."""

from __future__ import annotations

from pathlib import Path


def shapes_data_args(root: Path, kind: str) -> list[str]:
    """``--data.init_args.*`` for a ``write_shapes`` folder: ``kind`` "instances" (DETR) or
    "panoptic" (Mask2Former, with the instance file for mask AP); batches of 2."""
    ann = root / "annotations"
    args = [f"--data.init_args.train_annotations={ann / f'{kind}_train.json'}",
            f"--data.init_args.train_images={root / 'images/train'}",
            f"--data.init_args.val_annotations={ann / f'{kind}_val.json'}",
            f"--data.init_args.val_images={root / 'images/val'}",
            "--data.init_args.batch_size=2"]  # fmt: skip
    if kind == "panoptic":
        args.append(f"--data.init_args.val_instances={ann / 'instances_val.json'}")
    return args
