"""A ViT classifier for fine-tuning MAE encoders (end to end or the last k blocks).

The encoder is timm's ``VisionTransformer`` with the MAE preset's width, depth and heads; the
parameter names are the MAE encoder's, so pre-trained weights copy over one to one. With
``global_pool="avg"`` the patch tokens are averaged and normalised by ``fc_norm`` (the MAE
fine-tuning recipe: the encoder's final norm is not used); with ``"token"`` the class token
after the final norm feeds the head.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from vistra.models.layers.vit import PRESETS, resize_position_embedding, vit_layer_of

ENCODER_PREFIXES = ("patch_embed.", "cls_token", "pos_embed", "blocks.", "norm.")


class ViTClassifier(nn.Module):
    """ViT encoder + pooled head: ``images [B, 3, H, W] -> logits [B, num_classes]``.

    Args:
        num_classes: classes of the task.
        size, image_size, patch_size, mlp_ratio, in_chans: the encoder (MAE presets).
        global_pool: "avg" (mean of patch tokens + fc_norm, the paper's fine-tuning) or "token".
        drop_path: stochastic depth rate (paper: 0.1 for ViT-B, 0.2 for L/H).
        trainable_blocks: partial fine-tuning: train only the last k blocks (and the head and
            its norm); None trains everything.
        depth: encoder blocks instead of the preset's (as ``MaskedAutoencoder``'s ``depth``).
        grad_checkpointing: recompute each block's activations in the backward pass (timm's).
        checkpoint: weights to start from: a vistra MAE checkpoint, the MAE repository's
            ``mae_pretrain_*.pth`` or a Hugging Face ViTMAE checkpoint (encoder only). Its
            ``image_size`` may differ (same ``patch_size``): the position embeddings are
            resized bicubically to this model's patch grid.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        size: str = "base",
        image_size: int = 224,
        patch_size: int = 16,
        global_pool: str = "avg",
        drop_path: float = 0.1,
        trainable_blocks: int | None = None,
        checkpoint: str | None = None,
        mlp_ratio: float = 4.0,
        in_chans: int = 3,
        depth: int | None = None,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if num_classes is None:
            raise ValueError(
                "num_classes is not set: give it, or train with `vistra fit`, which takes it from "
                "the data"
            )
        if size not in PRESETS:
            raise ValueError(f"size must be one of {sorted(PRESETS)}, got {size!r}")
        if global_pool not in ("avg", "token"):
            raise ValueError(f"global_pool must be 'avg' or 'token', got {global_pool!r}")
        width, preset_depth, heads = PRESETS[size]
        depth = preset_depth if depth is None else depth
        if trainable_blocks is not None and not 0 <= trainable_blocks <= depth:
            raise ValueError(f"trainable_blocks must be in 0..{depth}, got {trainable_blocks}")
        self.config = dict(
            num_classes=num_classes, size=size, image_size=image_size, patch_size=patch_size,
            global_pool=global_pool, drop_path=drop_path, trainable_blocks=trainable_blocks,
            checkpoint=None, mlp_ratio=mlp_ratio, in_chans=in_chans, depth=depth,
            grad_checkpointing=grad_checkpointing,
        )  # fmt: skip
        self.vit = VisionTransformer(
            img_size=image_size,
            patch_size=patch_size,
            in_chans=in_chans,
            num_classes=num_classes,
            global_pool=global_pool,
            embed_dim=width,
            depth=depth,
            num_heads=heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            drop_path_rate=drop_path,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
        )
        self.vit.set_grad_checkpointing(grad_checkpointing)
        nn.init.trunc_normal_(self.vit.head.weight, std=2e-5)  # MAE fine-tuning head init
        nn.init.zeros_(self.vit.head.bias)
        self.num_features, self.num_classes = width, num_classes
        if checkpoint is not None:
            self.load_encoder(checkpoint)
        if trainable_blocks is not None:
            self.freeze_all_but_last(trainable_blocks)

    def load_encoder(self, path: str | Path) -> None:
        """Copy a pre-trained ViT encoder in (decoder and heads of the file are ignored): any
        file ``vistra.convert.backbone.read_encoder`` reads (a vistra MAE, fine-tuning or probe
        checkpoint, the MAE repository's, Hugging Face ViTMAE or timm ViT weights)."""
        from vistra.convert.backbone import read_encoder

        encoder = read_encoder(path)
        if encoder.kind != "vit":
            raise ValueError(f"{path}: holds {encoder.what}, not a ViT encoder")
        state = dict(encoder.state)
        target = self.vit.state_dict()
        if "pos_embed" in state and state["pos_embed"].shape != target["pos_embed"].shape:
            grid = tuple(self.vit.patch_embed.grid_size)
            old = state["pos_embed"].shape[1] - 1
            state["pos_embed"] = resize_position_embedding(state["pos_embed"], grid)
            print(
                f"{path}: position embeddings of {old} patches resized bicubically to the "
                f"{grid[0]} x {grid[1]} patch grid of {self.config['image_size']}-pixel images"
            )
        # "norm." is absent on purpose with global_pool="avg" (fc_norm replaces it).
        blocks_only = lambda keys: {k for k in keys if k.startswith(("blocks.", "patch_embed."))}  # noqa: E731
        missing = sorted(blocks_only(target) - set(state))
        unexpected = sorted(blocks_only(state) - set(target))
        if missing or unexpected:
            raise ValueError(
                f"{path}: the encoder does not match the classifier (depth differs?); "
                f"missing {missing[:6]}{'...' if len(missing) > 6 else ''}, "
                f"unexpected {unexpected[:6]}{'...' if len(unexpected) > 6 else ''}"
            )
        for key, value in state.items():
            if key.startswith(ENCODER_PREFIXES) and key in target:
                if target[key].shape != value.shape:
                    raise ValueError(
                        f"{path}: {key} has shape {tuple(value.shape)}, the classifier "
                        f"{tuple(target[key].shape)} (size/image_size/patch_size differ?)"
                    )
                target[key] = value
        self.vit.load_state_dict(target)

    def freeze_all_but_last(self, blocks: int) -> None:
        self.vit.requires_grad_(False)
        for block in list(self.vit.blocks)[len(self.vit.blocks) - blocks :]:
            block.requires_grad_(True)
        for module in (self.vit.fc_norm, self.vit.head):
            module.requires_grad_(True)
        if self.config["global_pool"] == "token":
            self.vit.norm.requires_grad_(True)

    def forward(self, images: Tensor) -> Tensor:
        return self.vit(images)

    def forward_features(self, images: Tensor) -> Tensor:
        """Pooled, normalised features [B, width] (what the head sees)."""
        tokens = self.vit.forward_features(images)
        return self.vit.forward_head(tokens, pre_logits=True)

    @property
    def num_layers(self) -> int:
        return len(self.vit.blocks) + 1

    def layer_of(self, name: str) -> int:
        """0 embeddings, i + 1 block i, ``num_layers`` the head and norms (layer-wise decay)."""
        return vit_layer_of(name.removeprefix("vit."), self.num_layers)

    def no_weight_decay(self) -> set[str]:
        return {"vit.cls_token", "vit.pos_embed"}
