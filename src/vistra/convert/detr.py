"""Original-repository and Hugging Face DETR checkpoints -> ``vistra.models.DETR``.

Original (facebookresearch/detr, e.g. ``detr-r50-e632da11.pth``): ``backbone.0.body.*``
(torchvision ResNet names, the same as timm's), ``transformer.encoder.layers.N.*`` with
``nn.MultiheadAttention`` projections; only the prefixes change.

Hugging Face (``DetrForObjectDetection`` with a timm backbone, transformers 4 or 5 names):
separate q/k/v projections are stacked into ``in_proj_weight``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor, nn

from vistra.convert.files import (
    load_checked,
    load_with_new_class_head,
    network_weights,
    read_state_dict,
)

ORIGINAL_RENAMES = [
    (r"^backbone\.0\.body\.", "backbone."),
    (r"^transformer\.encoder\.layers\.(\d+)\.linear(\d)\.", r"encoder_layers.\1.ffn.linear\2."),
    (r"^transformer\.encoder\.layers\.", "encoder_layers."),
    (r"^transformer\.decoder\.layers\.(\d+)\.linear(\d)\.", r"decoder_layers.\1.ffn.linear\2."),
    (r"^transformer\.decoder\.layers\.(\d+)\.multihead_attn\.", r"decoder_layers.\1.cross_attn."),
    (r"^transformer\.decoder\.layers\.", "decoder_layers."),
    (r"^transformer\.decoder\.norm\.", "decoder_norm."),
]

HF_RENAMES = [
    (r"^model\.backbone\.(conv_encoder\.)?model\.", "backbone."),
    (r"^model\.input_projection\.", "input_proj."),
    (r"^model\.query_position_embeddings\.", "query_embed."),
    (r"^class_labels_classifier\.", "class_embed."),
    (r"^bbox_predictor\.", "bbox_embed."),
    (r"^model\.decoder\.layernorm\.", "decoder_norm."),
    (r"^model\.(encoder|decoder)\.layers\.", r"\1_layers."),
    (r"\.(mlp\.)?fc(\d)\.", r".ffn.linear\2."),
    (r"\.(out_proj|o_proj)\.", ".out_proj."),
    (r"\.encoder_attn\.", ".cross_attn."),
    (r"^(encoder_layers\.\d+)\.self_attn_layer_norm\.", r"\1.norm1."),
    (r"^(encoder_layers\.\d+)\.final_layer_norm\.", r"\1.norm2."),
    (r"^(decoder_layers\.\d+)\.self_attn_layer_norm\.", r"\1.norm1."),
    (r"^(decoder_layers\.\d+)\.encoder_attn_layer_norm\.", r"\1.norm2."),
    (r"^(decoder_layers\.\d+)\.final_layer_norm\.", r"\1.norm3."),
]


def _renamed(state: dict[str, Tensor], renames: list[tuple[str, str]]) -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        for pattern, replacement in renames:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    return out


def detr_state_dict_from_original(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return _renamed(state, ORIGINAL_RENAMES)


def detr_state_dict_from_hf(state: dict[str, Tensor]) -> dict[str, Tensor]:
    renamed = _renamed(state, HF_RENAMES)
    fused = {}
    for key, value in renamed.items():
        match = re.match(r"(.*\.(?:self|cross)_attn)\.([qkv])_proj\.(weight|bias)$", key)
        if match is None:
            fused[key] = value
        elif match.group(2) == "q":
            attention, kind = match.group(1), match.group(3)
            parts = [renamed[f"{attention}.{p}_proj.{kind}"] for p in "qkv"]
            fused[f"{attention}.in_proj_{kind}"] = torch.cat(parts)
    return fused


def load_detr_weights(model: nn.Module, path: str | Path, new_classes: bool = False) -> nn.Module:
    """Load an original-repository, Hugging Face or vistra DETR checkpoint into ``model``.

    Args:
        new_classes: the model may have another class count than the file (fine-tuning a
            COCO detector on your categories): the class head then starts from scratch.
            Otherwise the model must have the file's classes (original COCO models: 91, ids
            0..90 with unused ids, "no object" last).

    Raises:
        ValueError listing missing, unexpected and wrong-shape keys when they do not fit.
    """
    state = network_weights(read_state_dict(path))
    if any(key.startswith("transformer.") for key in state):
        state = detr_state_dict_from_original(state)
    elif any(key.startswith(("model.", "class_labels_classifier.")) for key in state):
        state = detr_state_dict_from_hf(state)
    if new_classes:
        return load_with_new_class_head(model, state, path, "class_embed")
    return load_checked(model, state, path)
