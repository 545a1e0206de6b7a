"""What inference needs to know about a trained model, written once into its checkpoint.

A task writes its ``InferenceSpec`` when it saves a checkpoint; ``vistra predict`` (both forms),
``vistra.Predictor`` and ``vistra export`` read it back, so all of them prepare images, read
the outputs and apply thresholds the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from vistra.data.preprocess import Preprocess

PREPROCESS_KEY = "vistra_preprocess"
CATEGORIES_KEY = "vistra_categories"
POSTPROCESS_KEY = "vistra_postprocess"
VERSION_KEY = "vistra_version"
KINDS = ("classification", "embedding", "detection", "segmentation")
# What the network of each kind returns, in order (an exported file's output names).
OUTPUT_NAMES = {
    "classification": ("logits",),
    "embedding": ("features",),
    "detection": ("pred_logits", "pred_boxes"),
    "segmentation": ("pred_logits", "pred_masks"),
}
KIND_OF_NETWORK = {
    "DETR": "detection",
    "Mask2Former": "segmentation",
    "SupConModel": "embedding",
    "MaskedAutoencoder": "embedding",
    "ViTClassifier": "classification",
}


@dataclass(frozen=True)
class Thresholds:
    """Post-processing choices (Mask2Former's panoptic inference, instances kept, boxes drawn).

    Args:
        object_mask_threshold: a query enters the panoptic map above this class score (0.8).
        overlap_threshold: ... and when this share of its mask survives the overlaps (0.8).
        top_k: instances kept per image (100).
        picture_threshold: detections drawn in pictures score at least this (0.5); the
            results files hold every detection.
    """

    object_mask_threshold: float = 0.8
    overlap_threshold: float = 0.8
    top_k: int = 100
    picture_threshold: float = 0.5


@dataclass
class InferenceSpec:
    """How to run a trained network: its ``kind``, the input ``preprocess``, what labels mean
    (``names``, the data's ``category_ids``, which labels are ``thing_labels``), the
    ``thresholds`` and the vistra ``version`` that wrote it (``None`` when not recorded)."""

    kind: str
    preprocess: Preprocess | None
    names: list[str] | None = None
    category_ids: list[int] | None = None
    thing_labels: list[int] | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    version: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")

    def name(self, label: int) -> str:
        return self.names[label] if self.names and label < len(self.names) else str(label)

    def category(self, label: int) -> int:
        return self.category_ids[label] if self.category_ids else label

    # -- storage ----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Plain data (an ONNX file's metadata)."""
        return {"kind": self.kind, "preprocess": self.preprocess.to_dict(),
                **self.categories(), "thresholds": asdict(self.thresholds),
                VERSION_KEY: self.version or vistra_version()}  # fmt: skip

    @classmethod
    def from_dict(cls, values: dict) -> InferenceSpec:
        return cls(values["kind"], Preprocess.from_dict(values["preprocess"]), values.get("names"),
                   values.get("ids"), values.get("thing_labels"),
                   Thresholds(**values.get("thresholds", {})),
                   _text(values.get(VERSION_KEY)))  # fmt: skip

    def categories(self) -> dict:
        """``names``, ``ids`` and (segmentation) ``thing_labels``, the ones known."""
        values = {"names": self.names, "ids": self.category_ids, "thing_labels": self.thing_labels}
        return {key: value for key, value in values.items() if value is not None}

    def write(self, checkpoint: dict) -> None:
        """Into a checkpoint dict, beside the network spec."""
        if self.preprocess is not None:
            checkpoint[PREPROCESS_KEY] = self.preprocess.to_dict()
        if self.categories():
            checkpoint[CATEGORIES_KEY] = self.categories()
        checkpoint[POSTPROCESS_KEY] = asdict(self.thresholds)
        checkpoint[VERSION_KEY] = vistra_version()

    @classmethod
    def read(cls, checkpoint: dict, kind: str, origin: str = "checkpoint") -> InferenceSpec:
        """From a checkpoint dict (``kind`` follows from its network). A checkpoint without a
        preprocessing entry gets the family's evaluation default: 800 / 1333 for detection and
        segmentation, the network's own input size otherwise."""
        try:
            preprocess = Preprocess.from_dict(checkpoint.get(PREPROCESS_KEY) or default_preprocess(
                kind, checkpoint))  # fmt: skip
            thresholds = Thresholds(**(checkpoint.get(POSTPROCESS_KEY) or {}))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{origin}: unusable inference entry ({error})") from None
        categories = checkpoint.get(CATEGORIES_KEY) or {}
        names = categories.get("names")
        if names is None and kind == "classification":
            classes = (checkpoint.get("hyper_parameters") or {}).get("num_classes")
            names = [str(i) for i in range(classes)] if classes else None
        return cls(kind, preprocess, names, categories.get("ids"), categories.get("thing_labels"),
                   thresholds, _text(checkpoint.get(VERSION_KEY)))  # fmt: skip


def vistra_version() -> str:
    """The installed vistra's version (from its package metadata: the package root imports
    this module's users lazily)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vistra")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def _text(value) -> str | None:
    """A stored version string, or ``None`` for anything else (it is only reported)."""
    return value[:40] if isinstance(value, str) else None


def default_preprocess(kind: str, checkpoint: dict) -> dict:
    if kind in ("detection", "segmentation"):
        return {"resize": "shorter_side", "size": 800, "max_size": 1333}
    size = (checkpoint.get("vistra_network") or {}).get("init_args", {}).get("image_size")
    if size is None:
        raise ValueError("the checkpoint does not say the input size")
    return {"resize": "center_crop", "size": int(size)}
