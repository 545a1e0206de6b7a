"""SupCon / SimCLR network: a timm encoder and a projection head with L2-normalised output."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from vistra.models.backbones import create_encoder

HEADS = ("mlp", "linear")


class SupConModel(nn.Module):
    """Encoder + projection head (Khosla et al. 2020, section 3).

    The paper's head is an MLP (encoder width -> 2048 -> 128 with ReLU); ``head="linear"`` is the
    single-layer variant. Only the encoder is kept for downstream tasks.

    Args:
        encoder: timm architecture name (``resnet18`` for CPU, ``resnet50`` for the paper).
        head: "mlp" or "linear".
        feat_dim: output dimension of the projection (paper: 128).
        hidden_dim: MLP hidden width (paper: 2048).
        small_input: CIFAR-style stem for 32-pixel images (see ``create_encoder``).
    """

    def __init__(
        self,
        encoder: str = "resnet18",
        head: str = "mlp",
        feat_dim: int = 128,
        hidden_dim: int = 2048,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if feat_dim < 1 or hidden_dim < 1:
            raise ValueError(
                f"feat_dim and hidden_dim must be positive, got {feat_dim}, {hidden_dim}"
            )
        self.config = dict(
            encoder=encoder,
            head=head,
            feat_dim=feat_dim,
            hidden_dim=hidden_dim,
            small_input=small_input,
        )
        self.encoder = create_encoder(encoder, small_input=small_input)
        # What the encoder returns: after timm's pre-logits convolution for the networks that
        # have one (MobileNetV3, LCNet, EfficientNet...), which ``num_features`` does not count.
        width = getattr(self.encoder, "head_hidden_size", None) or self.encoder.num_features
        self.num_features = width
        if head == "mlp":
            self.head = nn.Sequential(
                nn.Linear(width, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, feat_dim)
            )
        else:
            self.head = nn.Linear(width, feat_dim)

    def forward_features(self, images: Tensor) -> Tensor:
        """images [B, 3, H, W] -> encoder features [B, num_features] (what probes use)."""
        return self.encoder(images)

    def forward_head(self, features: Tensor) -> Tensor:
        """encoder features [B, num_features] -> unit-norm projections [B, feat_dim]."""
        return F.normalize(self.head(features), dim=1)

    def forward(self, images: Tensor) -> Tensor:
        """images [B, 3, H, W] -> unit-norm projections [B, feat_dim]."""
        return self.forward_head(self.forward_features(images))
