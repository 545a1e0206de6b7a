"""``vistra predict --ckpt ... --input ... --output ...`` and ``vistra export ...``.

Inference and export need only a checkpoint (or an exported ONNX file): no config, no data
module. One unreadable image in a folder is reported and skipped; the rest are processed.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np

UNSAFE_HELP = (
    "load a checkpoint that holds Python objects besides tensors (loading it can run code: "
    "only for files you trust)"
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def find_images(spec: str) -> list[tuple[Path, Path]]:
    """A file, a folder (its images at any depth, sorted) or a glob pattern -> ``(path, name)``
    pairs; ``name`` is the path relative to the folder (the file name otherwise) and names the
    outputs, so sub-folders are kept apart."""
    path = Path(spec)
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise FileNotFoundError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in folder")
        return [(p, p.relative_to(path)) for p in found]
    if path.is_file():
        return [(path, Path(path.name))]
    matches = sorted(Path(p) for p in glob.glob(spec) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
    if not matches:
        raise FileNotFoundError(f"{spec}: no such file or folder, and no image matches it")
    return [(p, Path(p.name)) for p in matches]


def finite(result) -> bool:
    """No NaN or infinity in a result's floating-point tensors (JSON has no place for them)."""
    import torch

    if isinstance(result, torch.Tensor):
        values = [result]
    else:
        fields = dict(vars(result))
        fields.update(fields.pop("instances", None) or {})
        values = [v for v in fields.values() if isinstance(v, torch.Tensor)]
        values += [torch.tensor([s.get("score", 0.0) for s in fields.get("segments") or []])]
    return all(torch.isfinite(v).all() for v in values if v.is_floating_point())


def output_stems(names: list[Path]) -> dict[Path, Path]:
    """The output name (without suffix) of each input: its name without the suffix, or with
    it where two inputs differ only by suffix (``a.jpg`` and ``a.png`` -> ``a.jpg``,
    ``a.png``), so that no output overwrites another."""
    stems = [name.with_suffix("") for name in names]
    shared = {stem for stem in stems if stems.count(stem) > 1}
    return {name: (name if stem in shared else stem) for name, stem in zip(names, stems)}


def output_file(folder: Path, stem: Path, suffix: str) -> Path:
    """``folder/<stem><suffix>``, its sub-folders created."""
    target = folder / stem.parent / f"{stem.name}{suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vistra predict")
    parser.add_argument("--ckpt", required=True, help="vistra checkpoint (.ckpt) or .onnx file")
    parser.add_argument("--input", required=True, help="image file, folder or glob pattern")
    parser.add_argument("--output", required=True, help="folder for the results")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps ...")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                        help="bf16 / fp16 run under autocast")  # fmt: skip
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="detections scoring at least this are drawn (all are in the JSON)",
    )
    parser.add_argument("--unsafe-load", action="store_true", help=UNSAFE_HELP)
    return parser


def predict_command(words: list[str]) -> int:
    options = predict_parser().parse_args(words)
    from vistra.predictor import InputError, Predictor, to_pil

    try:
        if options.ckpt.endswith(".onnx"):
            predictor = Predictor.from_onnx(options.ckpt)
        else:
            predictor = Predictor.from_checkpoint(options.ckpt, options.device, options.precision,
                                                  options.unsafe_load or None)  # fmt: skip
        paths = find_images(options.input)
    except (FileNotFoundError, ValueError) as error:
        print(f"vistra predict: {error}", file=sys.stderr)
        return 2
    if options.batch_size < 1:
        print(f"vistra predict: --batch-size must be at least 1, got {options.batch_size}",
              file=sys.stderr)  # fmt: skip
        return 2
    out = Path(options.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".vistra-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        print(f"vistra predict: --output {out}: cannot write there ({error.strerror})",
              file=sys.stderr)  # fmt: skip
        return 2
    from tqdm import tqdm

    from vistra.data.sources.base import ImageLoadError

    stems = output_stems([name for _, name in paths])
    writer = WRITERS[predictor.kind](predictor, out, options)
    done, skipped = 0, 0
    # A batch of images in memory at a time (a folder of photos may not fit at once).
    for start in tqdm(range(0, len(paths), options.batch_size), desc="predict", unit="batch"):
        chunk = []
        for path, name in paths[start : start + options.batch_size]:
            try:
                chunk.append((name, to_pil(path)))
            except (ImageLoadError, InputError, OSError) as error:
                skipped += 1
                tqdm.write(f"skipped {path}: {error}", file=sys.stderr)
        if not chunk:
            continue
        results = predictor([image for _, image in chunk], batch_size=options.batch_size)
        for (name, image), result in zip(chunk, results):
            if not finite(result):
                print(f"vistra predict: {name}: the model's outputs are not finite (NaN or "
                      f"infinite: a diverged checkpoint?); {options.ckpt} gives no usable "
                      "predictions, nothing more was written", file=sys.stderr)  # fmt: skip
                return 2
            writer.add(name, stems[name], image, result)
            done += 1
    if not done:
        print("vistra predict: no readable image", file=sys.stderr)
        return 2
    writer.close()
    print(f"wrote {out} ({done} images, {skipped} skipped)")
    return 0


class ClassWriter:
    """classes.csv: file, label, name, score."""

    def __init__(self, predictor, out: Path, options) -> None:
        self.out, self.rows = out, ["file,label,name,score"]

    def add(self, path, stem, image, result) -> None:
        self.rows.append(f"{path.as_posix()},{result.label},{result.name},"
                         f"{float(result.scores[result.label]):.5f}")  # fmt: skip

    def close(self) -> None:
        (self.out / "classes.csv").write_text("\n".join(self.rows) + "\n")


class EmbeddingWriter:
    """embeddings.npy [N, D] and embeddings.txt (the file of each row); for an MAE also
    reconstructions.png (original | masked | reconstruction | pasted, up to 16 images)."""

    def __init__(self, predictor, out: Path, options) -> None:
        self.out, self.predictor, self.rows, self.names, self.shown = out, predictor, [], [], []

    def add(self, path, stem, image, result) -> None:
        self.rows.append(result.numpy())
        self.names.append(path.as_posix())
        if hasattr(self.predictor.network, "reconstruct") and len(self.shown) < 16:
            from vistra.predictor import prepare

            self.shown.append(prepare(image, self.predictor.preprocess))

    def close(self) -> None:
        np.save(self.out / "embeddings.npy", np.stack(self.rows))
        (self.out / "embeddings.txt").write_text("\n".join(self.names) + "\n")
        if self.shown:
            import torch

            from vistra.visualize import mae_reconstruction_grid

            network = self.predictor.network
            images = torch.stack(self.shown).to(self.predictor.device)
            torch.manual_seed(0)  # the random mask of the picture, reproducible
            with torch.no_grad():
                mae_reconstruction_grid(network, images, network(images),
                                        self.out / "reconstructions.png")  # fmt: skip


class DetectionWriter:
    """detections.json (COCO results; image_id = position in the input list) and pictures/."""

    def __init__(self, predictor, out: Path, options) -> None:
        self.out, self.threshold, self.results, self.images = out, options.threshold, [], []
        self.empty: list[str] = []  # pictures with no box at the threshold, and why
        (out / "pictures").mkdir(exist_ok=True)

    def add(self, path, stem, image, result) -> None:
        from vistra.visualize import draw_detections

        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": path.as_posix(),
                            "width": image.width, "height": image.height})  # fmt: skip
        for box, score, category in zip(result.boxes.tolist(), result.scores.tolist(),
                                        result.category_ids):  # fmt: skip
            self.results.append({"image_id": image_id, "category_id": int(category),
                                 "bbox": [round(box[0], 2), round(box[1], 2),
                                          round(box[2] - box[0], 2), round(box[3] - box[1], 2)],
                                 "score": round(float(score), 5)})  # fmt: skip
        keep = result.scores >= self.threshold
        if not keep.any() and len(result.scores):
            self.empty.append(
                f"{path.as_posix()}: {len(result.scores)} detections, all below "
                f"--threshold {self.threshold} (best {float(result.scores.max()):.3f})"
            )
        labels = result.labels[keep].tolist()
        names = [name for name, kept in zip(result.names, keep.tolist()) if kept]
        picture = draw_detections(image, result.boxes[keep], names, result.scores[keep], labels,
                                  scale=max(1.0, 288 / max(image.size)))  # fmt: skip
        picture.save(output_file(self.out / "pictures", stem, ".png"))

    def close(self) -> None:
        (self.out / "detections.json").write_text(json.dumps(self.results))
        (self.out / "images.json").write_text(json.dumps(self.images))
        if self.empty:
            print(f"{len(self.empty)} of {len(self.images)} pictures have no box drawn; lower "
                  "--threshold to see them (detections.json has every detection):",
                  file=sys.stderr)  # fmt: skip
            for line in self.empty[:10]:
                print(f"  {line}", file=sys.stderr)


class SegmentationWriter:
    """panoptic.json + panoptic/*.png (COCO panoptic results), instances.json (COCO segm
    results), semantic/*.png (class index per pixel) and pictures/ (overlays with a legend)."""

    def __init__(self, predictor, out: Path, options) -> None:
        self.out, self.predictor = out, predictor
        self.panoptic, self.instances, self.images = [], [], []
        self.reduced = 0
        for folder in ("panoptic", "semantic", "pictures"):
            (out / folder).mkdir(exist_ok=True)

    def add(self, path, stem, image, result) -> None:
        from PIL import Image

        from vistra.evaluation.coco import masks_to_coco
        from vistra.visualize import segmentation_overlay, write_panoptic_png

        image_id = len(self.images) + 1
        height, width = result.semantic.shape
        entry = {"id": image_id, "file_name": path.as_posix(), "width": width, "height": height}
        if image.size != (width, height):  # a huge image: its maps are at a reduced size
            entry["original_width"], entry["original_height"] = image.size
            image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
            self.reduced += 1
        self.images.append(entry)
        semantic = result.semantic.numpy().astype(np.uint8)
        Image.fromarray(semantic).save(output_file(self.out / "semantic", stem, ".png"))
        shown = {"semantic": result.semantic}
        if result.panoptic is not None:
            write_panoptic_png(
                result.panoptic.numpy(), output_file(self.out / "panoptic", stem, ".png")
            )
            self.panoptic.append({
                "image_id": image_id, "file_name": f"{stem.as_posix()}.png",
                "segments_info": [{"id": s["id"], "category_id": s["category_id"],
                                   "isthing": int(s["isthing"]), "score": s["score"],
                                   "area": s["area"]} for s in result.segments],
            })  # fmt: skip
            shown["panoptic"] = (result.panoptic, result.segments)
        if result.instances is not None:
            ids = self.predictor.category_ids or list(range(result.semantic.max() + 1))
            self.instances += masks_to_coco(image_id, result.instances, ids)
        names = self.predictor.names or [str(i) for i in range(256)]
        segmentation_overlay(image, shown, names).save(
            output_file(self.out / "pictures", stem, ".png")
        )

    def close(self) -> None:
        (self.out / "panoptic.json").write_text(json.dumps({"annotations": self.panoptic}))
        (self.out / "instances.json").write_text(json.dumps(self.instances))
        (self.out / "images.json").write_text(json.dumps(self.images))
        if self.reduced:
            from vistra.predictor import MAX_MAP_PIXELS

            print(f"{self.reduced} image(s) over {MAX_MAP_PIXELS / 1e6:.1f} megapixels: their "
                  "maps are at a reduced size (width / height in images.json, original_width "
                  "/ original_height beside them)", file=sys.stderr)  # fmt: skip


WRITERS = {"classification": ClassWriter, "embedding": EmbeddingWriter,
           "detection": DetectionWriter, "segmentation": SegmentationWriter}  # fmt: skip


def export_command(words: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vistra export")
    parser.add_argument("--ckpt", required=True, help="vistra checkpoint (.ckpt)")
    parser.add_argument("--format", choices=["onnx", "exported-program"], default="onnx")
    parser.add_argument("--output", required=True, help="file to write (.onnx / .pt2)")
    parser.add_argument("--image", help="a real image to check the export on (default: a "
                        "synthetic scene)")  # fmt: skip
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--dynamic", action="store_true", help="dynamic batch and image size")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--unsafe-load", action="store_true", help=UNSAFE_HELP)
    options = parser.parse_args(words)
    if (options.height is None) != (options.width is None):
        parser.error("give both --height and --width, or neither")
    from vistra.export import export
    from vistra.predictor import Predictor

    try:
        predictor = Predictor.from_checkpoint(options.ckpt, unsafe_load=options.unsafe_load or None)
        image = options.image or _synthetic_scene()
        check = None
        if options.dynamic and predictor.kind in ("detection", "segmentation"):
            base = options.height or predictor.preprocess["size"]
            check = [(base // 2 + 16, base // 2 + 48)]
        report = export(predictor, options.output, image, options.format, options.height,
                        options.width, options.dynamic, check, options.tolerance)  # fmt: skip
    except (FileNotFoundError, ValueError) as error:
        print(f"vistra export: {error}", file=sys.stderr)
        return 2
    except ImportError as error:
        print(f"vistra export: {error.name or error} is missing: pip install 'vistra[export]'",
              file=sys.stderr)  # fmt: skip
        return 2
    print(report)
    return 0


def _synthetic_scene():
    from vistra.data.shapes import render_scene

    return render_scene(np.random.default_rng(0), 128, 3)["image"]
