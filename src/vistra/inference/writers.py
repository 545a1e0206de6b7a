"""Result files, one writer per family, shared by both forms of ``vistra predict``.

A writer gets each image's ``ImageRecord`` and result in input order and writes its files on
``close()``: ``classes.csv``; ``embeddings.npy`` + ``embeddings.txt`` (+ MAE
``reconstructions.png``); ``detections.json`` (COCO results) + ``pictures/``;
``panoptic.json`` + ``panoptic/`` (COCO panoptic results), ``instances.json`` (COCO segm
results), ``semantic/`` + ``pictures/``. Every writer also writes ``images.json``.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vistra.inference.spec import InferenceSpec


@dataclass
class ImageRecord:
    """One input: ``name`` (its path relative to the input folder), ``stem`` (output name
    without suffix), ``image_id`` (in the results files) and the RGB ``image``."""

    name: Path
    stem: Path
    image_id: int
    image: Image.Image


class OutsideOutput(ValueError):
    """An output name that would resolve outside the output folder."""


def output_file(folder: Path, stem: Path, suffix: str) -> Path:
    """``folder/<stem><suffix>``, its sub-folders created; a name that would resolve outside
    ``folder`` (an absolute stem, ``..``, a link out of it) is refused."""
    target = folder / stem.parent / f"{stem.name}{suffix}"
    if not target.resolve().is_relative_to(folder.resolve()):
        raise OutsideOutput(f"{stem}: its output {target} would leave {folder}")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


class ResultWriter:
    """What every writer shares: the output folder, the spec and ``images.json``."""

    def __init__(self, spec: InferenceSpec, out: Path, threshold: float | None = None,
                 network=None) -> None:  # fmt: skip
        self.spec, self.out, self.network = spec, Path(out), network
        self.threshold = spec.thresholds.picture_threshold if threshold is None else threshold
        self.images: list[dict] = []
        self.out.mkdir(parents=True, exist_ok=True)

    def add(self, record: ImageRecord, result) -> None:
        width, height = record.image.size
        self.images.append({"id": record.image_id, "file_name": record.name.as_posix(),
                            "width": width, "height": height})  # fmt: skip
        self.write_kept(record, result)

    def write_kept(self, record: ImageRecord, result) -> None:
        """``write``, where a file that cannot be written (a name too long, a full disk) is
        named and the run goes on: the results files still hold every image's rows."""
        try:
            self.write(record, result)
        except (OSError, OutsideOutput) as error:
            print(f"vistra predict: {record.name.as_posix()}: a file of its results could not "
                  f"be written ({error}); the rest are kept", file=sys.stderr)  # fmt: skip

    def write(self, record: ImageRecord, result) -> None:
        raise NotImplementedError

    def close(self) -> None:
        (self.out / "images.json").write_text(json.dumps(self.images))


# A spreadsheet runs a cell that starts with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def text_cell(text: str) -> str:
    """``text`` for a CSV cell a spreadsheet shows as text: a formula start gets a leading
    apostrophe (OWASP's advice for CSV injection)."""
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


class ClassWriter(ResultWriter):
    """classes.csv (the csv module's quoting; file and class names as text cells): file,
    label, name, score."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rows = [["file", "label", "name", "score"]]

    def write(self, record, result) -> None:
        self.rows.append([text_cell(record.name.as_posix()), result.label,
                          text_cell(result.name),
                          f"{float(result.scores[result.label]):.5f}"])  # fmt: skip

    def close(self) -> None:
        super().close()
        # A file name that is not UTF-8 is written back as the file system's own bytes.
        with open(self.out / "classes.csv", "w", newline="", encoding="utf-8",
                  errors="surrogateescape") as file:  # fmt: skip
            csv.writer(file, lineterminator="\n").writerows(self.rows)


class EmbeddingWriter(ResultWriter):
    """embeddings.npy [N, D] and embeddings.txt (the file of each row); for an MAE also
    reconstructions.png (original | masked | reconstruction | pasted, up to 16 images)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rows, self.shown = [], []

    def write(self, record, result) -> None:
        self.rows.append(np.asarray(result))
        if hasattr(self.network, "reconstruct") and len(self.shown) < 16:
            self.shown.append(self.spec.preprocess(record.image))

    def close(self) -> None:
        super().close()
        np.save(self.out / "embeddings.npy", np.stack(self.rows))
        (self.out / "embeddings.txt").write_text(
            "\n".join(image["file_name"] for image in self.images) + "\n",
            encoding="utf-8", errors="surrogateescape",
        )  # fmt: skip
        if self.shown:
            import torch

            from vistra.inference.pictures import mae_reconstruction_grid

            device = next(self.network.parameters()).device
            images = torch.stack(self.shown).to(device)
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                torch.manual_seed(0)  # the random mask of the picture, reproducible
                mae_reconstruction_grid(self.network, images, self.network(images),
                                        self.out / "reconstructions.png")  # fmt: skip


class DetectionWriter(ResultWriter):
    """detections.json (COCO results, every query) and pictures/ (boxes over the threshold)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.results: list[dict] = []
        self.empty: list[str] = []  # pictures with no box at the threshold, and why

    def write(self, record, result) -> None:
        from vistra.inference.result_json import detection_picture, detection_rows

        self.results += [{"image_id": record.image_id, **row} for row in detection_rows(result)]
        if len(result.scores) and not (result.scores >= self.threshold).any():
            self.empty.append(
                f"{record.name.as_posix()}: {len(result.scores)} detections, all "
                f"below {self.threshold} (best {float(result.scores.max()):.3f})"
            )
        picture = detection_picture(record.image, result, self.threshold)
        picture.save(output_file(self.out / "pictures", record.stem, ".png"))

    def close(self) -> None:
        super().close()
        (self.out / "detections.json").write_text(json.dumps(self.results))
        if self.empty:
            print(f"{len(self.empty)} of {len(self.images)} pictures have no box drawn; lower "
                  "--threshold (--predictions.threshold with --config) to see them "
                  "(detections.json has every detection):", file=sys.stderr)  # fmt: skip
            for line in self.empty[:10]:
                print(f"  {line}", file=sys.stderr)
