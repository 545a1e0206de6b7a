"""Hugging Face and original (detectron2) Mask2Former checkpoints -> ``vistra.models.Mask2Former``.

Hugging Face (``Mask2FormerForUniversalSegmentation``): pixel decoder under
``model.pixel_level_module.decoder``, transformer under ``model.transformer_module``, class head
``class_predictor``; the decoder's self-attention has separate q/k/v projections, stacked here
into ``in_proj_weight``.

Original (facebookresearch/Mask2Former, detectron2 names, ``.pkl`` or ``.pth``):
``sem_seg_head.pixel_decoder.*`` and ``sem_seg_head.predictor.*`` with ``nn.MultiheadAttention``
layouts; the three per-layer module lists (cross-attention, self-attention, FFN) are regrouped
per layer; detectron2's ResNet (``stem``, ``resN.M.convK`` + ``norm``, ``shortcut``) becomes
timm's ResNet, and its ``D2SwinTransformer`` (``backbone.layers.N.blocks.M.attn.qkv``, patch
merging ``layers.N.downsample`` at the end of a stage, output norms ``backbone.normN``) becomes
vistra's Swin (``vistra.models.swin``, timm's parameter names), as the Hugging Face Swin
checkpoints below.

Hugging Face ResNet backbones (``ResNetBackbone``: embedder / stages / layers) become timm's
ResNet of the same depth (conv1 / bn1 / layerN.M.convK, bnK, downsample).
Hugging Face Swin backbones (``SwinBackbone`` inside the checkpoint, transformers 4 or 5 names)
become vistra's Swin under timm's names (q/k/v stacked into ``qkv``; patch merging moved from
the end of a stage to the start of the next, as timm holds it; the per-stage output norms become
``backbone.out_norms``); build the vistra model with the timm name of the same Swin (e.g.
``swin_tiny_patch4_window7_224`` for ``facebook/mask2former-swin-tiny-*``, ``swin_base_patch4_
window12_384`` for Swin-B 384). Other backbones load under timm's own names (``backbone.body.*``).
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

SWIN_RENAMES = [
    (r"^model\.pixel_level_module\.encoder\.hidden_states_norms\.stage(\d)\.",
     lambda m: f"backbone.out_norms.{int(m.group(1)) - 1}."),
    (r"^model\.pixel_level_module\.encoder\.(swin\.)?embeddings\.patch_embeddings\.projection\.",
     "backbone.body.patch_embed.proj."),
    (r"^model\.pixel_level_module\.encoder\.(swin\.)?embeddings\.norm\.",
     "backbone.body.patch_embed.norm."),
    (r"^model\.pixel_level_module\.encoder\.(swin\.)?encoder\.layers\.(\d+)\.downsample\.",
     lambda m: f"backbone.body.layers_{int(m.group(2)) + 1}.downsample."),
    (r"^model\.pixel_level_module\.encoder\.(swin\.)?encoder\.layers\.(\d+)\.blocks\.",
     r"backbone.body.layers_\2.blocks."),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"\.attention\.(self\.|relative_position_bias\.)?relative_position_bias_table$",
     ".attn.relative_position_bias_table"),
    (r"\.attention\.self\.(query|key|value)\.", lambda m: f".attn.{m.group(1)[0]}_proj."),
    (r"\.attention\.([qkv])_proj\.", r".attn.\1_proj."),
    (r"\.attention\.(output\.dense|o_proj)\.", ".attn.proj."),
    (r"(blocks\.\d+)\.intermediate\.dense\.", r"\1.mlp.fc1."),
    (r"(blocks\.\d+)\.output\.dense\.", r"\1.mlp.fc2."),
]  # fmt: skip

RESNET_RENAMES = [
    (r"^model\.pixel_level_module\.encoder\.embedder\.embedder\.convolution\.",
     "backbone.body.conv1."),
    (r"^model\.pixel_level_module\.encoder\.embedder\.embedder\.normalization\.",
     "backbone.body.bn1."),
    (r"^model\.pixel_level_module\.encoder\.encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\."
     r"(convolution|normalization)\.",
     lambda m: f"backbone.body.layer{int(m.group(1)) + 1}.{m.group(2)}.downsample."
               f"{0 if m.group(3) == 'convolution' else 1}."),
    (r"^model\.pixel_level_module\.encoder\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\."
     r"(convolution|normalization)\.",
     lambda m: f"backbone.body.layer{int(m.group(1)) + 1}.{m.group(2)}."
               f"{'conv' if m.group(4) == 'convolution' else 'bn'}{int(m.group(3)) + 1}."),
]  # fmt: skip

HF_RENAMES = [
    (r"^model\.pixel_level_module\.encoder\.", "backbone.body."),
    (r"^model\.pixel_level_module\.decoder\.input_projections\.", "pixel_decoder.input_proj."),
    (r"^model\.pixel_level_module\.decoder\.level_embed$", "pixel_decoder.level_embed"),
    (r"^model\.pixel_level_module\.decoder\.encoder\.layers\.", "pixel_decoder.layers."),
    (r"^(pixel_decoder\.layers\.\d+)\.self_attn_layer_norm\.", r"\1.norm1."),
    (r"^(pixel_decoder\.layers\.\d+)\.final_layer_norm\.", r"\1.norm2."),
    (r"^(pixel_decoder\.layers\.\d+)\.fc(\d)\.", r"\1.linear\2."),
    (r"^model\.pixel_level_module\.decoder\.mask_projection\.", "pixel_decoder.mask_features."),
    (r"^model\.pixel_level_module\.decoder\.adapter_1\.", "pixel_decoder.lateral."),
    (r"^model\.pixel_level_module\.decoder\.layer_1\.", "pixel_decoder.output."),
    (r"^model\.transformer_module\.queries_embedder\.", "decoder.query_embed."),
    (r"^model\.transformer_module\.queries_features\.", "decoder.query_feat."),
    (r"^model\.transformer_module\.level_embed\.", "decoder.level_embed."),
    (r"^model\.transformer_module\.input_projections\.", "decoder.input_proj."),
    (r"^model\.transformer_module\.decoder\.layernorm\.", "decoder.decoder_norm."),
    (r"^model\.transformer_module\.decoder\.mask_predictor\.mask_embedder\.(\d)\.0\.",
     r"decoder.mask_embed.layers.\1."),
    (r"^model\.transformer_module\.decoder\.layers\.", "decoder.layers."),
    (r"^(decoder\.layers\.\d+)\.cross_attn_layer_norm\.", r"\1.norm1."),
    (r"^(decoder\.layers\.\d+)\.self_attn_layer_norm\.", r"\1.norm2."),
    (r"^(decoder\.layers\.\d+)\.final_layer_norm\.", r"\1.norm3."),
    (r"^(decoder\.layers\.\d+)\.fc(\d)\.", r"\1.ffn.linear\2."),
    (r"^class_predictor\.", "decoder.class_embed."),
]  # fmt: skip

ORIGINAL_RENAMES = [
    # detectron2's ResNet (stride in the 3x3 conv, as Mask2Former's R50) -> timm's ResNet
    (r"^backbone\.stem\.conv1\.weight$", "backbone.conv1.weight"),
    (r"^backbone\.stem\.conv1\.norm\.", "backbone.bn1."),
    (r"^backbone\.res(\d)\.(\d+)\.shortcut\.weight$",
     lambda m: f"backbone.layer{int(m.group(1)) - 1}.{m.group(2)}.downsample.0.weight"),
    (r"^backbone\.res(\d)\.(\d+)\.shortcut\.norm\.",
     lambda m: f"backbone.layer{int(m.group(1)) - 1}.{m.group(2)}.downsample.1."),
    (r"^backbone\.res(\d)\.(\d+)\.conv(\d)\.weight$",
     lambda m: f"backbone.layer{int(m.group(1)) - 1}.{m.group(2)}.conv{m.group(3)}.weight"),
    (r"^backbone\.res(\d)\.(\d+)\.conv(\d)\.norm\.",
     lambda m: f"backbone.layer{int(m.group(1)) - 1}.{m.group(2)}.bn{m.group(3)}."),
    # D2SwinTransformer (the Swin repository's names) -> timm's Swin: patch merging moves from
    # the end of stage i to the start of stage i + 1; the per-stage output norms "norm{i}".
    (r"^backbone\.norm(\d)\.", r"backbone.out_norms.\1."),
    (r"^backbone\.layers\.(\d+)\.downsample\.",
     lambda m: f"backbone.layers_{int(m.group(1)) + 1}.downsample."),
    (r"^backbone\.layers\.(\d+)\.blocks\.", r"backbone.layers_\1.blocks."),
    (r"^backbone\.(?!out_norms\.)", "backbone.body."),
    (r"^sem_seg_head\.pixel_decoder\.input_proj\.", "pixel_decoder.input_proj."),
    (r"^sem_seg_head\.pixel_decoder\.transformer\.level_embed$", "pixel_decoder.level_embed"),
    (r"^sem_seg_head\.pixel_decoder\.transformer\.encoder\.layers\.", "pixel_decoder.layers."),
    (r"^sem_seg_head\.pixel_decoder\.mask_features\.", "pixel_decoder.mask_features."),
    (r"^sem_seg_head\.pixel_decoder\.adapter_1\.weight$", "pixel_decoder.lateral.0.weight"),
    (r"^sem_seg_head\.pixel_decoder\.adapter_1\.norm\.", "pixel_decoder.lateral.1."),
    (r"^sem_seg_head\.pixel_decoder\.layer_1\.weight$", "pixel_decoder.output.0.weight"),
    (r"^sem_seg_head\.pixel_decoder\.layer_1\.norm\.", "pixel_decoder.output.1."),
    (r"^sem_seg_head\.predictor\.transformer_cross_attention_layers\.(\d+)\.multihead_attn\.",
     r"decoder.layers.\1.cross_attn."),
    (r"^sem_seg_head\.predictor\.transformer_cross_attention_layers\.(\d+)\.norm\.",
     r"decoder.layers.\1.norm1."),
    (r"^sem_seg_head\.predictor\.transformer_self_attention_layers\.(\d+)\.self_attn\.",
     r"decoder.layers.\1.self_attn."),
    (r"^sem_seg_head\.predictor\.transformer_self_attention_layers\.(\d+)\.norm\.",
     r"decoder.layers.\1.norm2."),
    (r"^sem_seg_head\.predictor\.transformer_ffn_layers\.(\d+)\.linear(\d)\.",
     r"decoder.layers.\1.ffn.linear\2."),
    (r"^sem_seg_head\.predictor\.transformer_ffn_layers\.(\d+)\.norm\.",
     r"decoder.layers.\1.norm3."),
    (r"^sem_seg_head\.predictor\.mask_embed\.layers\.", "decoder.mask_embed.layers."),
    (r"^sem_seg_head\.predictor\.", "decoder."),
]  # fmt: skip


def _renamed(state: dict[str, Tensor], renames: list[tuple[str, str]]) -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked") or key.startswith(("criterion.", "criterion")):
            continue
        for pattern, replacement in renames:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    return out


def mask2former_state_dict_from_hf(state: dict[str, Tensor]) -> dict[str, Tensor]:
    swin = any("embeddings.patch_embeddings" in key for key in state)
    if swin:
        state = _renamed(
            {k: v for k, v in state.items() if not k.endswith(("relative_position_index",
                                                                 "swin.layernorm.weight",
                                                                 "swin.layernorm.bias"))},
            SWIN_RENAMES,
        )  # fmt: skip
    if any(".embedder.embedder." in key for key in state):  # HF's own ResNet backbone
        state = _renamed(state, RESNET_RENAMES)
    renamed = _renamed(state, HF_RENAMES)
    fused = {}
    for key, value in renamed.items():
        match = re.match(r"(.*\.(?:self_attn|attn))\.([qkv])_proj\.(weight|bias)$", key)
        if match is None:
            fused[key] = value
        elif match.group(2) == "q":
            attention, kind = match.group(1), match.group(3)
            parts = [renamed[f"{attention}.{p}_proj.{kind}"] for p in "qkv"]
            name = "qkv." if attention.endswith(".attn") else "in_proj_"
            fused[f"{attention}.{name}{kind}"] = torch.cat(parts)
    return fused


def mask2former_state_dict_from_original(state: dict[str, Tensor]) -> dict[str, Tensor]:
    # Swin's relative_position_index and attn_mask are buffers timm rebuilds from the sizes.
    state = {k: v for k, v in state.items() if not k.endswith(("relative_position_index",
                                                                "attn_mask"))}  # fmt: skip
    renamed = _renamed(state, ORIGINAL_RENAMES)
    # detectron2 names the pixel decoder's input projections "input_proj.N.0/1" as well, and the
    # deformable layers' FFN / norms "linear1/2", "norm1/2": the same as vistra's.
    return renamed


def load_mask2former_weights(
    model: nn.Module, path: str | Path, new_classes: bool = False
) -> nn.Module:
    """Load a Hugging Face or original-repository Mask2Former checkpoint into ``model``.

    The model must have the checkpoint's number of classes and sizes. Backbone weights load only
    when they use timm's names (see the module docstring); otherwise they are listed as missing
    or unexpected in the error.

    Args:
        new_classes: the model may have another class count than the file (e.g. COCO's 133
            panoptic classes -> yours): the class head then starts from scratch.

    Raises:
        ValueError listing missing, unexpected and wrong-shape keys when they do not fit.
    """
    state = network_weights(read_state_dict(path))
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if any(key.startswith("sem_seg_head.") for key in state):
        state = mask2former_state_dict_from_original(state)
    elif any(key.startswith(("model.pixel_level_module.", "class_predictor.")) for key in state):
        state = mask2former_state_dict_from_hf(state)
    if new_classes:
        return load_with_new_class_head(model, state, path, "decoder.class_embed")
    return load_checked(model, state, path)
