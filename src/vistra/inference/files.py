"""The results files of a prediction run: which writer, and where."""

from __future__ import annotations

from pathlib import Path

from vistra.inference.segmentation_writer import SegmentationWriter
from vistra.inference.spec import InferenceSpec
from vistra.inference.writers import ClassWriter, DetectionWriter, EmbeddingWriter, ResultWriter

WRITERS = {"classification": ClassWriter, "embedding": EmbeddingWriter,
           "detection": DetectionWriter, "segmentation": SegmentationWriter}  # fmt: skip


def writer_for(spec: InferenceSpec, out: str | Path, threshold: float | None = None,
               network=None) -> ResultWriter:  # fmt: skip
    """The writer of ``spec.kind`` into ``out``; ``threshold`` overrides the spec's picture
    threshold; ``network``: the model (an MAE draws reconstructions with it)."""
    return WRITERS[spec.kind](spec, Path(out), threshold, network)
