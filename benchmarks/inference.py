"""Inference throughput: PyTorch eager against onnxruntime, per family, on this CPU.

Each model is exported with ``vistra.inference.export.export`` (dynamic batch, checked against
PyTorch on the same image), then both run the same prepared batch; images/s is batch / median time.

Run: .venv/bin/python benchmarks/inference.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import seconds_per_call, table  # noqa: E402

from vistra.data.preprocess import Preprocess, pad_images  # noqa: E402
from vistra.data.shapes import render_scene  # noqa: E402
from vistra.inference.export import export, load_exported  # noqa: E402
from vistra.inference.images import to_pil  # noqa: E402
from vistra.inference.network import InferenceNetwork  # noqa: E402
from vistra.inference.predictor import Predictor  # noqa: E402
from vistra.inference.spec import InferenceSpec  # noqa: E402
from vistra.models import DETR, Mask2Former, MaskedAutoencoder, SupConModel  # noqa: E402

CASES = [
    # name, network factory, kind, preprocess, batch
    ("SupCon ResNet-50 encoder", lambda: SupConModel("resnet50"), "embedding",
     Preprocess("center_crop", 224), 8),
    ("MAE ViT-B/16 encoder (no masking)", lambda: MaskedAutoencoder("base"), "embedding",
     Preprocess("center_crop", 224), 8),
    ("DETR-R50", lambda: DETR(91), "detection",
     Preprocess("shorter_side", 512, 512), 2),
    ("Mask2Former-R50", lambda: Mask2Former(133), "segmentation",
     Preprocess("shorter_side", 384, 384), 2),
]  # fmt: skip


def main() -> None:
    torch.manual_seed(0)
    image = render_scene(np.random.default_rng(0), 512, 3)["image"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, factory, kind, preprocess, batch in CASES:
            predictor = Predictor(factory().eval(), InferenceSpec(kind, preprocess))
            path = Path(folder) / f"{kind}.onnx"
            report = export(predictor, path, image, "onnx", dynamic=True)
            module = InferenceNetwork(kind, predictor.network).eval()
            images, pixel_mask = pad_images([preprocess(to_pil(image))] * batch)
            inputs = (images, pixel_mask) if kind == "detection" else (images,)
            run = load_exported(path)
            with torch.no_grad():
                eager = seconds_per_call(lambda m=module, x=inputs: m(*x), warmup=1, repeat=5)
            onnx = seconds_per_call(lambda r=run, x=inputs: r(*x), warmup=1, repeat=5)
            size = "x".join(str(s) for s in images.shape[-2:])
            rows.append([name, f"{size}, batch {batch}", f"{batch / eager:.2f}",
                         f"{batch / onnx:.2f}", f"{eager / onnx:.2f}x",
                         f"{report.max_rel:.1e}"])  # fmt: skip
            print(rows[-1], flush=True)
    print()
    print(table(["model", "input", "eager img/s", "onnxruntime img/s", "speed-up",
                 "max rel. diff"], rows))  # fmt: skip


if __name__ == "__main__":
    main()
