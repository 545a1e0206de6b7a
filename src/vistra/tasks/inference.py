"""What every task shares for inference: the ``InferenceSpec`` it writes into each checkpoint
and a ``predict_step`` through ``vistra.inference`` (the same forward and post-processing as
``vistra predict --ckpt``)."""

from __future__ import annotations

from vistra.data.preprocess import Preprocess
from vistra.inference.checkpoint import NETWORK_KEY, model_class, network_spec
from vistra.inference.images import map_size
from vistra.inference.network import InferenceNetwork, named_outputs
from vistra.inference.postprocess import to_results
from vistra.inference.spec import (
    CATEGORIES_KEY,
    KIND_OF_NETWORK,
    PREPROCESS_KEY,
    InferenceSpec,
    Thresholds,
)


class InferenceSteps:
    """Mixin for LightningModules with a ``network``; a linear probe also has a ``head``.

    Tasks with their own category bookkeeping set ``category_ids``, ``class_names`` and
    ``thing_labels``; tasks with thresholds override ``inference_thresholds``.
    """

    def inference_kind(self) -> str | None:
        if getattr(self, "head", None) is not None and hasattr(self.network, "forward_features"):
            return "classification"
        return KIND_OF_NETWORK.get(model_class(self.network).__name__)

    def inference_thresholds(self) -> Thresholds:
        return Thresholds()

    def inference_categories(self) -> dict:
        """``names``, ``ids`` (the data's category ids) and ``thing_labels`` where known."""
        if getattr(self, "category_ids", 0) is None and self._trainer is not None:
            # Not read from the data yet (no validation before this checkpoint or prediction):
            # a detection / segmentation task reads its categories and thing classes now.
            self._categories_from_data()
        names = getattr(self, "class_names", None)
        ids = getattr(self, "category_ids", None)
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        if names is None and datamodule is not None:
            names = list(getattr(datamodule, "classes", None) or []) or None
            ids = getattr(datamodule, "category_ids", None)
        if names is not None and ids is None:
            ids = list(range(len(names)))
        return {"names": names, "ids": None if ids is None else list(ids),
                "thing_labels": getattr(self, "thing_labels", None)}  # fmt: skip

    def inference_spec(self) -> InferenceSpec | None:
        """The spec of this model and data; None for networks inference does not serve, or
        when neither the data module nor a loaded checkpoint says how to prepare images."""
        kind = self.inference_kind()
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        preprocess = getattr(datamodule, "preprocess", None) or getattr(
            self, "_checkpoint_preprocess", None
        )
        if kind is None or preprocess is None:
            return None
        categories = self.inference_categories()
        return InferenceSpec(kind, preprocess, categories["names"], categories["ids"],
                             categories["thing_labels"], self.inference_thresholds())  # fmt: skip

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[NETWORK_KEY] = network_spec(self.network)
        spec = self.inference_spec()
        if spec is not None:
            spec.write(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get(PREPROCESS_KEY):
            self._checkpoint_preprocess = Preprocess.from_dict(checkpoint[PREPROCESS_KEY])
        categories = checkpoint.get(CATEGORIES_KEY) or {}
        for attribute, key in (("category_ids", "ids"), ("class_names", "names"),
                               ("thing_labels", "thing_labels")):  # fmt: skip
            if hasattr(self, attribute) and categories.get(key) is not None:
                setattr(self, attribute, categories[key])

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> list:
        """Results per image (``vistra.inference.results``); the ``PredictionFiles`` callback
        writes them."""
        spec = self.inference_spec()
        if spec is None:
            raise ValueError(f"{type(self).__name__} has no inference spec: predict needs a data "
                             "module that says how images are prepared")  # fmt: skip
        images, pixel_mask, targets = batch if len(batch) == 3 else (batch[0], None, None)
        network = InferenceNetwork(spec.kind, self.network, getattr(self, "head", None))
        raw = named_outputs(spec.kind, network(images, pixel_mask))
        if targets is None:
            input_sizes = output_sizes = [tuple(images.shape[-2:])] * len(images)
        else:
            input_sizes = [tuple(int(v) for v in t["size"]) for t in targets]
            output_sizes = [tuple(int(v) for v in t["orig_size"]) for t in targets]
        if spec.kind == "segmentation":
            output_sizes = [map_size(*size) for size in output_sizes]
        return to_results(raw, spec, tuple(images.shape[-2:]), input_sizes, output_sizes)
