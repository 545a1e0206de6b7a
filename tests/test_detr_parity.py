"""DETR against Hugging Face ``DetrForObjectDetection`` with the same random weights.

Both models get one set of random weights (HF's, converted by ``detr_state_dict_from_hf``, so
the converter is tested too) and the same padded batch; logits, boxes and the Hungarian loss
must agree to 1e-4 relative.
"""

from __future__ import annotations

import pytest
import torch

from vistra.convert.detr import detr_state_dict_from_hf
from vistra.losses import HungarianMatcher, SetCriterion
from vistra.models import DETR

transformers = pytest.importorskip("transformers")


def _randomize(module: torch.nn.Module, seed: int, layer_norms: bool) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if "running_var" in name:
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif "layer_norm" in name or "layernorm" in name:
                if layer_norms:
                    base = 1.0 if name.endswith("weight") else 0.0
                    tensor.copy_(base + 0.1 * torch.randn(tensor.shape, generator=generator))
            else:
                tensor.copy_(0.05 * torch.randn(tensor.shape, generator=generator))


def _pair(num_classes: int, aux: bool, layer_norms: bool, **sizes):
    config = transformers.DetrConfig(
        use_timm_backbone=True,
        backbone="resnet50",
        use_pretrained_backbone=False,
        num_labels=num_classes,
        auxiliary_loss=aux,
        **sizes,
    )
    peer = transformers.DetrForObjectDetection(config).eval()
    _randomize(peer, 0, layer_norms)
    ours = DETR(
        num_classes,
        hidden_dim=config.d_model,
        num_heads=config.encoder_attention_heads,
        num_encoder_layers=config.encoder_layers,
        num_decoder_layers=config.decoder_layers,
        ffn_dim=config.encoder_ffn_dim,
        num_queries=config.num_queries,
        aux_loss=aux,
    ).eval()
    ours.load_state_dict(detr_state_dict_from_hf(peer.state_dict()), strict=True)
    return ours, peer


def _batch():
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 160, 192, generator=generator)
    pixel_mask = torch.ones(2, 160, 192, dtype=torch.bool)
    pixel_mask[1, 128:, :] = False  # second image is 128 x 160, padded
    pixel_mask[1, :, 160:] = False
    images[1, :, 128:, :] = 0
    images[1, :, :, 160:] = 0
    targets = [
        {"labels": torch.tensor([0, 2, 1]),
         "boxes": torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.6, 0.5, 0.4, 0.2], [0.5, 0.5, 0.9, 0.9]])},
        {"labels": torch.tensor([3]), "boxes": torch.tensor([[0.7, 0.2, 0.1, 0.3]])},
    ]  # fmt: skip
    return images, pixel_mask, targets


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def test_same_weights_same_logits_and_boxes():
    # auxiliary_loss off: every weight random, the layer norms included.
    ours, peer = _pair(4, aux=False, layer_norms=True, decoder_layers=3, encoder_layers=2)
    images, pixel_mask, _ = _batch()
    with torch.no_grad():
        expected = peer(pixel_values=images, pixel_mask=pixel_mask.long())
        got = ours(images, pixel_mask)
    assert _relative_error(got["pred_logits"], expected.logits) <= 1e-4
    assert _relative_error(got["pred_boxes"], expected.pred_boxes) <= 1e-4


def test_same_weights_same_loss_with_auxiliary_outputs():
    # With auxiliary_loss on, transformers feeds the decoder's final LayerNorm output into the
    # next layer, the original DETR does not; both are the same while that norm has its
    # initial unit scale and zero shift, so the layer norms keep their init here.
    ours, peer = _pair(4, aux=True, layer_norms=False)
    images, pixel_mask, targets = _batch()
    hf_labels = [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in targets]
    with torch.no_grad():
        expected = peer(pixel_values=images, pixel_mask=pixel_mask.long(), labels=hf_labels)
        got = ours(images, pixel_mask)
        criterion = SetCriterion(4, HungarianMatcher(1, 5, 2), eos_coef=0.1)
        terms = criterion(got, targets)
        loss = criterion.total(terms)
    assert len(got["aux_outputs"]) == 5
    assert _relative_error(got["pred_logits"], expected.logits) <= 1e-4
    assert _relative_error(got["pred_boxes"], expected.pred_boxes) <= 1e-4
    for name in ("loss_ce", "loss_bbox", "loss_giou", "loss_ce_0", "loss_giou_4"):
        assert _relative_error(terms[name], expected.loss_dict[name]) <= 1e-4, name
    assert _relative_error(loss, expected.loss) <= 1e-4
