"""MAE weights: the original repository's checkpoints and Hugging Face ViTMAE checkpoints.

The original ``mae_pretrain_vit_base.pth`` (``{"model": ...}``, timm naming) already uses
vistra's names. Hugging Face ``ViTMAEForPreTraining`` / ``ViTMAEModel`` checkpoints are renamed
and their separate query/key/value projections are concatenated into timm's fused ``qkv``; both
the published naming (``vit.encoder.layer.N.attention.attention.query``) and transformers 5's
(``vit.layers.N.attention.q_proj``) are read.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor, nn

from vistra.convert.files import load_checked, read_state_dict

# Published Hugging Face names -> transformers 5 names (applied first).
_LEGACY = [
    (r"^vit\.encoder\.layer\.", "vit.layers."),
    # transformers 5's save_pretrained writes the decoder's blocks under this name.
    (r"^decoder\.decoder_encoder\.layer\.", "decoder.decoder_layers."),
    (r"\.attention\.attention\.query\.", ".attention.q_proj."),
    (r"\.attention\.attention\.key\.", ".attention.k_proj."),
    (r"\.attention\.attention\.value\.", ".attention.v_proj."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
]
# transformers 5 names -> vistra names.
_RENAMES = [
    (r"^vit\.embeddings\.cls_token$", "cls_token"),
    (r"^vit\.embeddings\.position_embeddings$", "pos_embed"),
    (r"^vit\.embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^vit\.layers\.(\d+)\.", r"blocks.\1."),
    (r"^vit\.layernorm\.", "norm."),
    (r"^decoder\.decoder_layers\.(\d+)\.", r"decoder_blocks.\1."),
    (r"^decoder\.", ""),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"\.attention\.o_proj\.", ".attn.proj."),
]
_HF_MODEL_PREFIXES = ("embeddings.", "encoder.", "layers.", "layernorm.")


def mae_state_dict_from_hf(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a Hugging Face ViTMAE state dict to ``MaskedAutoencoder``'s keys."""
    renamed: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(_HF_MODEL_PREFIXES):  # ViTMAEModel: no "vit." prefix
            key = "vit." + key
        for pattern, replacement in _LEGACY + _RENAMES:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value
    fused: dict[str, Tensor] = {}
    for key, value in renamed.items():
        match = re.match(r"^(.*)\.attention\.q_proj\.(weight|bias)$", key)
        if match:
            block, kind = match.groups()
            parts = [renamed[f"{block}.attention.{p}_proj.{kind}"] for p in "qkv"]
            fused[f"{block}.attn.qkv.{kind}"] = torch.cat(parts)
        elif not re.search(r"\.attention\.[kv]_proj\.", key):
            fused[key] = value
    return fused


def load_mae_weights(model: nn.Module, path: str | Path, encoder_only: bool = False) -> nn.Module:
    """Load an original-repository or Hugging Face MAE checkpoint into ``model``.

    Args:
        model: a ``MaskedAutoencoder`` of the checkpoint's size.
        path: ``.pth`` / ``.bin`` / ``.safetensors``.
        encoder_only: accept checkpoints without the decoder (fine-tuning, feature extraction);
            the decoder keeps its initialisation.

    Raises:
        ValueError listing the missing and unexpected keys when they do not fit.
    """
    state = read_state_dict(path)
    if any(key.startswith(("vit.", "embeddings.", "decoder.decoder")) for key in state):
        state = mae_state_dict_from_hf(state)
    # Heads of fine-tuned checkpoints are not part of the MAE.
    state = {k: v for k, v in state.items() if not k.startswith(("head.", "fc_norm."))}
    allowed = _is_decoder_key if encoder_only else (lambda key: False)
    return load_checked(model, state, path, allowed)


def _is_decoder_key(key: str) -> bool:
    return key.startswith(("decoder", "mask_token"))
