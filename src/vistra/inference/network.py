"""The part of a trained model inference runs: prepared images in, raw output tensors out.

The same module serves ``vistra.Predictor``, the training tasks' ``predict_step`` and the
exporters (whose files hold exactly this graph), so all of them compute the same numbers.
"""

from __future__ import annotations

from torch import Tensor, nn

from vistra.inference.spec import OUTPUT_NAMES


class InferenceNetwork(nn.Module):
    """``network`` (and a linear probe's ``head``) as a tuple-returning forward for ``kind``.

    ``forward(images [B, 3, H, W], pixel_mask [B, H, W] | None)`` returns the tensors named in
    ``OUTPUT_NAMES[kind]``: class logits, encoder features, DETR's ``pred_logits`` /
    ``pred_boxes`` or Mask2Former's ``pred_logits`` / ``pred_masks``.
    """

    def __init__(self, kind: str, network: nn.Module, head: nn.Module | None = None) -> None:
        super().__init__()
        if kind not in OUTPUT_NAMES:
            raise ValueError(f"unknown kind {kind!r}")
        self.kind, self.network, self.head = kind, network, head

    def forward(self, images: Tensor, pixel_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        if self.kind == "embedding":
            return (self.network.forward_features(images),)
        if self.kind == "classification":
            if self.head is not None:
                return (self.head(self.network.forward_features(images)),)
            return (self.network(images),)
        if self.kind == "detection":
            outputs = self.network(images, pixel_mask)
            return outputs["pred_logits"], outputs["pred_boxes"]
        outputs = self.network(images, pixel_mask)
        return outputs["pred_logits"], outputs["pred_masks"]


def named_outputs(kind: str, tensors: tuple[Tensor, ...], cpu: bool = True) -> dict[str, Tensor]:
    """The tuple of ``InferenceNetwork`` (or an exported file) as float tensors by name, on
    the CPU (inference: results leave the device) or where they are (``cpu=False``: validation
    post-processes on the accelerator)."""
    return {name: (t.float().cpu() if cpu else t.float())
            for name, t in zip(OUTPUT_NAMES[kind], tensors)}  # fmt: skip


def probe_head(state: dict) -> nn.Module | None:
    """The linear-probe head (``head.0`` BatchNorm without affine, ``head.1`` Linear) in a
    checkpoint's state, if it has one."""
    if "head.1.weight" not in state:
        return None
    classes, width = state["head.1.weight"].shape
    norm = nn.BatchNorm1d(width, affine=False) if "head.0.running_mean" in state else nn.Identity()
    head = nn.Sequential(norm, nn.Linear(width, classes))
    head.load_state_dict({k[len("head.") :]: v for k, v in state.items() if k.startswith("head.")})
    return head
