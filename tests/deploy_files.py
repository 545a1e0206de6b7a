"""Small checkpoints of every family laid out as vistra's tasks write them, for the inference
tests (``test_deploy``, ``test_onnx_contract``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vistra.data.shapes import render_scene
from vistra.inference.checkpoint import NETWORK_KEY, network_spec
from vistra.inference.spec import PREPROCESS_KEY
from vistra.models import DETR, Mask2Former, MaskedAutoencoder, SupConModel

DETECTION = {"resize": "shorter_side", "size": 96, "max_size": 160}
SQUARE = {"resize": "center_crop", "size": 32}


def save_checkpoint(path: Path, network, preprocess, categories=None, extra_state=None) -> Path:
    """A checkpoint laid out as vistra's tasks write it (see ``describe_for_inference``)."""
    torch.manual_seed(0)
    state = {f"network.{k}": v for k, v in network.state_dict().items()}
    state.update(extra_state or {})
    checkpoint = {NETWORK_KEY: network_spec(network), PREPROCESS_KEY: preprocess,
                  "state_dict": state, "vistra_categories": categories}  # fmt: skip
    torch.save(checkpoint, path)
    return path


def build_checkpoints(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    detr = DETR(3, backbone="resnet18", hidden_dim=64, num_encoder_layers=1,
                num_decoder_layers=2, ffn_dim=128, num_queries=5).eval()  # fmt: skip
    with torch.no_grad():  # confident classes so that some detections pass 0.5
        detr.class_embed.bias.copy_(torch.tensor([3.0, 0.0, 0.0, -3.0]))
    vit_detr = DETR(
        3,
        backbone="vit_tiny",
        backbone_stage=3,
        hidden_dim=64,
        num_queries=5,
        num_encoder_layers=1,
        num_decoder_layers=1,
        ffn_dim=128,
        backbone_options=dict(depth=2, window_size=4, pretrain_image_size=64),
    ).eval()
    m2f = Mask2Former(6, backbone="resnet18", dim=32, mask_dim=32, pixel_decoder_layers=1,
                      decoder_layers=1, num_queries=8, heads=4).eval()  # fmt: skip
    supcon = SupConModel(small_input=True).eval()
    mae = MaskedAutoencoder(size="tiny", image_size=32, patch_size=8, decoder_width=64,
                            decoder_depth=1, decoder_heads=2, depth=2).eval()  # fmt: skip
    probe = {"head.0.running_mean": torch.zeros(192), "head.0.running_var": torch.ones(192),
             "head.0.num_batches_tracked": torch.tensor(0),
             "head.1.weight": torch.randn(10, 192), "head.1.bias": torch.zeros(10)}  # fmt: skip
    things = {"ids": [1, 2, 3, 10, 11, 12], "names": list("abcdef"), "thing_labels": [0, 1, 2]}
    return {
        "detection": save_checkpoint(root / "detr.ckpt", detr, DETECTION,
                           {"ids": [1, 2, 3], "names": ["circle", "square", "triangle"]}),
        "segmentation": save_checkpoint(root / "m2f.ckpt", m2f, DETECTION, things),
        # ViTDet's backbone: windows padded at 96 pixels (6 x 6 patches), another grid at 64 x 80
        "detection_vit": save_checkpoint(root / "vit_detr.ckpt", vit_detr, DETECTION,
                               {"ids": [1, 2, 3], "names": ["circle", "square", "triangle"]}),
        "embedding": save_checkpoint(root / "supcon.ckpt", supcon, SQUARE),
        "classification": save_checkpoint(root / "probe.ckpt", mae, SQUARE, extra_state=probe),
        "mae": save_checkpoint(root / "mae.ckpt", mae, SQUARE),
    }  # fmt: skip


def write_scenes(folder: Path, sizes) -> Path:
    """Shapes scenes of the given (height, width) sizes as PNGs in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, (height, width) in enumerate(sizes):
        scene = render_scene(np.random.default_rng(index), max(height, width), 3)["image"]
        Image.fromarray(scene[:height, :width]).save(folder / f"scene{index}.png")
    return folder
