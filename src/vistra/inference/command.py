"""``vistra predict --ckpt ... --input ... --output ...`` and ``vistra export ...``.

Inference and export need only a checkpoint (or an exported ONNX file): no config, no data
module, no Lightning. One unreadable image in a folder is reported and skipped; the rest are
processed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

UNSAFE_HELP = (
    "load a checkpoint that holds Python objects besides tensors (loading it can run code: "
    "only for files you trust)"
)


def predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vistra predict")
    parser.add_argument("--ckpt", required=True, help="vistra checkpoint (.ckpt), .onnx file, "
                        "or a Hugging Face model id / save_pretrained folder (DETR, Mask2Former, "
                        "ViTMAE; from the local cache only)")  # fmt: skip
    parser.add_argument("--input", required=True, help="image file, folder or glob pattern")
    parser.add_argument("--output", required=True, help="folder for the results")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps ...")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                        help="bf16 / fp16 run under autocast")  # fmt: skip
    parser.add_argument("--threshold", type=float, default=None,
                        help="detections scoring at least this are drawn (default: the "
                        "checkpoint's, 0.5; the JSON has all)")  # fmt: skip
    parser.add_argument("--unsafe-load", action="store_true", help=UNSAFE_HELP)
    return parser


def fail(command: str, message) -> int:
    print(f"vistra {command}: {message}", file=sys.stderr)
    return 2


def predict_command(words: list[str]) -> int:
    options = predict_parser().parse_args(words)
    from vistra.inference.images import find_images
    from vistra.inference.predictor import Predictor

    try:
        predictor = Predictor.load(options.ckpt, options.device, options.precision,
                                   options.unsafe_load or None)  # fmt: skip
        paths = find_images(options.input)
    except (FileNotFoundError, ValueError) as error:
        return fail("predict", error)
    if options.batch_size < 1:
        return fail("predict", f"--batch-size must be at least 1, got {options.batch_size}")
    out = Path(options.output)
    inside = _inside_input(out, options.input)
    if inside:
        return fail("predict", inside)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".vistra-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        return fail("predict", f"--output {out}: cannot write there ({error.strerror})")
    return predict_files(predictor, paths, out, options)


def _inside_input(out: Path, given: str) -> str | None:
    """Why ``--output`` may not be used with ``--input`` (equal to or inside the input folder:
    a run would write over inputs, and the next run would read its results as images)."""
    folder = Path(given)
    if not folder.is_dir():
        return None
    folder, target = folder.resolve(), out.resolve()
    if target == folder or folder in target.parents:
        return (
            f"--output {out} is inside --input {given}: results would land among the "
            "images (and be read as inputs by the next run); choose a folder outside it"
        )
    return None


def predict_files(predictor, paths: list[tuple[Path, Path]], out: Path, options) -> int:
    """Run ``predictor`` over ``paths`` a batch at a time (a folder of photos may not fit in
    memory at once) and write the results files; image ids are input positions from 1."""
    from tqdm import tqdm

    from vistra.data.image_files import ImageLoadError
    from vistra.inference.files import writer_for
    from vistra.inference.images import InputError, output_stems, to_pil
    from vistra.inference.results import finite
    from vistra.inference.writers import ImageRecord

    stems = output_stems([name for _, name in paths])
    writer = writer_for(predictor.spec, out, options.threshold, predictor.network)
    done, skipped = 0, 0
    for start in tqdm(range(0, len(paths), options.batch_size), desc="predict", unit="batch"):
        chunk = []
        for position, (path, name) in enumerate(paths[start : start + options.batch_size]):
            try:
                image = to_pil(path)
            except (ImageLoadError, InputError, OSError) as error:
                skipped += 1
                tqdm.write(f"skipped {path}: {error}", file=sys.stderr)
                continue
            chunk.append(ImageRecord(name, stems[name], start + position + 1, image))
        if not chunk:
            continue
        try:
            results = predictor.run([r.image for r in chunk])
        except InputError as error:
            return fail("predict", f"{chunk[0].name}: {error}")
        for record, result in zip(chunk, results):
            if not finite(result):
                return fail("predict", f"{record.name}: the model's outputs are not finite (NaN "
                            f"or infinite: a diverged checkpoint?); {options.ckpt} gives no "
                            "usable predictions, nothing more was written")  # fmt: skip
            writer.add(record, result)
            done += 1
    if not done:
        return fail("predict", "no readable image")
    writer.close()
    print(f"wrote {out} ({done} images, {skipped} skipped)")
    return 0


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vistra export")
    parser.add_argument("--ckpt", required=True, help="vistra checkpoint (.ckpt), or a Hugging "
                        "Face model id / save_pretrained folder")  # fmt: skip
    parser.add_argument("--format", choices=["onnx", "exported-program"], default="onnx")
    parser.add_argument("--output", required=True, help="file to write (.onnx / .pt2)")
    parser.add_argument("--image", help="a real image to check the export on (default: a "
                        "synthetic scene)")  # fmt: skip
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--static", action="store_true", help="a fixed batch of 1 at --height x "
                        "--width (default: any batch and size); vistra fits images to it or "
                        "refuses them")  # fmt: skip
    parser.add_argument("--dynamic", action="store_true", help=argparse.SUPPRESS)  # the default
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--unsafe-load", action="store_true", help=UNSAFE_HELP)
    return parser


def export_command(words: list[str]) -> int:
    parser = export_parser()
    options = parser.parse_args(words)
    if (options.height is None) != (options.width is None):
        parser.error("give both --height and --width, or neither")
    from vistra.inference.export import export
    from vistra.inference.predictor import Predictor

    try:
        predictor = Predictor.load(options.ckpt, unsafe_load=options.unsafe_load or None)
        if predictor.onnx:
            raise ValueError(f"{options.ckpt}: already an ONNX file; export the .ckpt")
        image = options.image or _synthetic_scene()
        check = None
        if not options.static and predictor.kind in ("detection", "segmentation"):
            base = options.height or predictor.preprocess.size
            check = [(base // 2 + 16, base // 2 + 48)]
        report = export(predictor, options.output, image, options.format, options.height,
                        options.width, not options.static, check, options.tolerance)  # fmt: skip
    except (FileNotFoundError, ValueError) as error:
        return fail("export", error)
    except ImportError as error:
        return fail("export", f"{error.name or error} is missing: pip install 'vistra[export]'")
    print(report)
    return 0


def _synthetic_scene():
    import numpy as np

    from vistra.data.shapes import render_scene

    return render_scene(np.random.default_rng(0), 128, 3)["image"]
