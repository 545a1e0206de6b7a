"""What the command tests share: the data arguments of a shapes set written by the test, and
the README's "Smaller networks" sizes for the full-size templates."""

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


NET = "--model.init_args.network.init_args."
# The README's "Smaller networks" keys at the smallest sizes that still run every part: how the
# tests of the full-size templates (``custom_*.yaml``) shrink them, a documented substitution.
SMALL = {
    "detr": [f"{NET}backbone=resnet18", f"{NET}hidden_dim=32", f"{NET}num_encoder_layers=1",
             f"{NET}num_decoder_layers=1", f"{NET}ffn_dim=64", f"{NET}num_queries=10"],
    "mask2former": [f"{NET}backbone=resnet18", f"{NET}dim=32", f"{NET}mask_dim=32",
                    f"{NET}pixel_decoder_layers=1", f"{NET}pixel_ffn_dim=64",
                    f"{NET}decoder_layers=3", f"{NET}ffn_dim=64", f"{NET}num_queries=8"],
    "vit": [f"{NET}size=tiny", f"{NET}depth=2"],
    "mae": [f"{NET}size=tiny", f"{NET}depth=2", f"{NET}decoder_width=64",
            f"{NET}decoder_depth=1", f"{NET}decoder_heads=2"],
    "supcon": [f"{NET}encoder=resnet18", f"{NET}hidden_dim=64"],
    # a ViT backbone: the "mae" run's encoder at 32 pixels (the size the README test gives it)
    "vit_backbone": [f"{NET}backbone=vit_tiny",
                     f"{NET}backbone_options={{depth: 2, patch_size: 16, pretrain_image_size: 32, "
                     "image_size: 64, window_size: 4}"],
}  # fmt: skip
