"""Any encoder a weight file holds, into a detection or segmentation backbone: one checked loader.

``backbone_checkpoint`` of DETR, Mask2Former and the box-map stage comes here. A vistra
checkpoint says what its network is (``vistra_network``: a SupCon / SimCLR model, an MAE, a
fine-tuned ViT, also under a linear probe; ``vistra_encoder``: the box-map stage), so the
encoder is taken from where that network keeps it. Files from elsewhere record nothing and are
recognised by their layout: a Hugging Face ViTMAE (renamed by ``vistra.convert.mae``), an MAE
repository or timm ViT (``patch_embed`` + ``blocks``), otherwise a timm / torchvision CNN.

Every weight of the backbone comes from the file, or nothing is loaded and a
``CheckpointMismatchError`` says in one line what the file holds and what the backbone is
(another architecture, another stem, another width or depth, no encoder at all). Two
exceptions, both ViTDet's: relative-position tables a file lacks start at zero, and a position
table learnt on another grid is resized to the backbone's pre-training grid. Weights the
backbone does not use (heads, projection MLPs, an MAE's decoder and class token, stages after
the last one returned) are left out.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from vistra.convert.files import (
    NETWORK_KEY,
    CheckpointMismatchError,
    read_weight_file,
    unwrap_state_dict,
)
from vistra.models.layers.vit import PRESETS, resize_position_embedding

ENCODER_KEY = "vistra_encoder"  # {"name": timm architecture} of a task without a network

# Where each vistra network keeps its encoder in a checkpoint's state, and of which kind.
ENCODERS = {
    "vistra.models.supcon.SupConModel": ("cnn", "network.encoder."),
    "vistra.models.mae.MaskedAutoencoder": ("vit", "network."),
    "vistra.models.vit_classifier.ViTClassifier": ("vit", "network.vit."),
}
WHOLE_MODELS = ("vistra.models.detr.DETR", "vistra.models.mask2former.model.Mask2Former")
# A ViT encoder's parts (ViTDet's backbone uses neither the class token nor the final norm).
VIT_PARTS = ("patch_embed.", "pos_embed", "blocks.", "cls_token", "norm.")
SIZE_OF_WIDTH = {width: size for size, (width, _, _) in PRESETS.items()}


@dataclass
class Encoder:
    """An encoder found in a file: ``kind`` "cnn" or "vit", ``what`` for messages, ``state``
    in timm / MAE names; ``name`` and ``small_input`` when the file records them."""

    kind: str
    what: str
    state: dict[str, Tensor]
    name: str | None = None
    small_input: bool = False


def read_encoder(path: str | Path) -> Encoder:
    """The encoder ``path`` holds (read as data; see the module docstring for the kinds)."""
    data = read_weight_file(path)
    if isinstance(data, dict) and isinstance(data.get(NETWORK_KEY), dict):
        return _recorded_encoder(data, path)
    if isinstance(data, dict) and isinstance(data.get(ENCODER_KEY), dict):
        name = str(data[ENCODER_KEY].get("name"))
        state = _under(unwrap_state_dict(data, path), "backbone.")
        return Encoder("cnn", f"the {name} backbone of a box-map pre-training", state, name)
    state = unwrap_state_dict(data, path)
    if any(key.startswith(("vit.", "embeddings.", "decoder.decoder")) for key in state):
        from vistra.convert.mae import mae_state_dict_from_hf

        return _vit_encoder(mae_state_dict_from_hf(state), "Hugging Face ViTMAE")
    if "patch_embed.proj.weight" in state and any(k.startswith("blocks.") for k in state):
        return _vit_encoder(state, "ViT")
    return Encoder("cnn", "CNN weights", state)


def _recorded_encoder(checkpoint: dict, path: str | Path) -> Encoder:
    record = checkpoint[NETWORK_KEY]
    class_path, init_args = record.get("class_path"), record.get("init_args") or {}
    network = str(class_path).rsplit(".", 1)[-1]
    if class_path in WHOLE_MODELS:
        raise CheckpointMismatchError(
            f"{path}: holds a whole {network}, not an encoder: start from it with the network's "
            f"`checkpoint` instead of `backbone_checkpoint`"
        )
    if class_path not in ENCODERS:
        raise CheckpointMismatchError(f"{path}: holds a {class_path!r} network, which has no "
                                      "encoder vistra knows")  # fmt: skip
    kind, prefix = ENCODERS[class_path]
    state = _under(unwrap_state_dict(checkpoint, path), prefix)
    if kind == "vit":
        return _vit_encoder(state, f"{network} ({init_args.get('size', '?')})")
    name, small = str(init_args.get("encoder")), bool(init_args.get("small_input"))
    stem = " with the CIFAR stem (small_input: true)" if small else ""
    return Encoder("cnn", f"the {name} encoder of a {network}{stem}", state, name, small)


def _under(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _vit_encoder(state: dict[str, Tensor], origin: str) -> Encoder:
    state = {k: v for k, v in state.items() if k.startswith(VIT_PARTS)}
    projection = state.get("patch_embed.proj.weight")
    if projection is None:
        return Encoder("vit", f"a {origin} without a patch embedding", state)
    width, patch = projection.shape[0], projection.shape[-1]
    size = SIZE_OF_WIDTH.get(width, "of another size")
    return Encoder("vit", f"a ViT-{size} encoder (width {width}, {_depth(state)} blocks, patch "
                          f"{patch}) of a {origin}", state)  # fmt: skip


def _depth(state: dict[str, Tensor]) -> int:
    return len({key.split(".")[1] for key in state if key.startswith("blocks.")})


def load_backbone_weights(backbone: nn.Module, path: str | Path, name: str) -> None:
    """Copy the encoder in ``path`` into ``backbone`` (a ``ViTPyramid`` or a timm feature
    model of architecture ``name``), every weight checked; see the module docstring."""
    encoder = read_encoder(path)
    is_vit = hasattr(backbone, "trunk_names")
    kind = "vit" if is_vit else "cnn"
    configured = backbone.describe() if is_vit else name
    if encoder.kind != kind:
        kinds = {"vit": "a plain ViT", "cnn": "a timm network (CNN or Swin)"}
        raise CheckpointMismatchError(f"{path}: holds {encoder.what}, {kinds[encoder.kind]}; the "
                                      f"backbone is {configured}, {kinds[kind]}")  # fmt: skip
    refuse = lambda problem: CheckpointMismatchError(  # noqa: E731
        f"{path}: holds {encoder.what}; the backbone is {configured}: {problem}"
    )
    if is_vit:
        state = _vit_state(backbone, encoder, refuse, path)
    else:
        state = _cnn_state(backbone, encoder, name, refuse)
    backbone.load_state_dict({**backbone.state_dict(), **state})
    print(f"{path}: backbone {configured} starts from {encoder.what} ({len(state)} weights)",
          file=sys.stderr)  # fmt: skip


def _cnn_state(backbone: nn.Module, encoder: Encoder, name: str, refuse) -> dict[str, Tensor]:
    if encoder.name is not None and encoder.name != name:
        raise refuse("another architecture")
    if encoder.small_input:
        raise refuse("a detection backbone has the standard stem; pre-train with small_input: "
                     "false")  # fmt: skip
    # BatchNorm's step counters and Swin's index tables carry no weights.
    derived = ("num_batches_tracked", "relative_position_index")
    wanted = [k for k in backbone.state_dict() if not k.endswith(derived)]
    found = {key: _file_key(key, encoder.state) for key in wanted}
    missing = [key for key, file_key in found.items() if file_key is None]
    if len(missing) == len(wanted):
        some = ", ".join(sorted(encoder.state)[:4]) or "nothing"
        raise refuse(f"the file has none of the backbone's weights (it has {some} ...): "
                     "no encoder of this architecture")  # fmt: skip
    if missing:
        raise refuse(f"{len(missing)} of its {len(wanted)} weights are not in the file (e.g. "
                     f"{', '.join(missing[:3])})")  # fmt: skip
    counters = {k: encoder.state[k] for k in backbone.state_dict()
                if k.endswith("num_batches_tracked") and k in encoder.state}  # fmt: skip
    state = {key: encoder.state[file_key] for key, file_key in found.items()}
    return _checked_shapes({**state, **counters}, backbone, refuse)


def _file_key(key: str, state: dict[str, Tensor]) -> str | None:
    """The file's name for a timm feature model's ``key``: the same, or the full model's
    ``layers.0`` where the feature model flattened it to ``layers_0``."""
    if key in state:
        return key
    unflattened = re.sub(r"^([A-Za-z]+)_(\d+)\.", r"\1.\2.", key)
    return unflattened if unflattened in state else None


def _vit_state(backbone: nn.Module, encoder: Encoder, refuse, path) -> dict[str, Tensor]:
    state = encoder.state
    projection = state.get("patch_embed.proj.weight")
    ours = backbone.patch_embed.proj.weight
    if projection is None:
        raise refuse("no patch embedding in the file")
    if projection.shape[0] != ours.shape[0]:
        raise refuse(f"another width ({projection.shape[0]} against {ours.shape[0]})")
    if projection.shape[-1] != ours.shape[-1]:
        raise refuse(f"another patch size ({projection.shape[-1]} against {ours.shape[-1]})")
    if _depth(state) != backbone.depth:
        raise refuse(f"another depth ({_depth(state)} blocks against {backbone.depth})")
    wanted = backbone.trunk_names()
    missing = [k for k in wanted if k not in state and "rel_pos" not in k]
    if missing:
        raise refuse(f"{len(missing)} weights are not in the file (e.g. {', '.join(missing[:3])})")
    loaded = {k: state[k] for k in wanted if k in state}
    loaded["pos_embed"] = _position_table(state["pos_embed"], backbone.pos_embed, path)
    return _checked_shapes(loaded, backbone, refuse)


def _position_table(table: Tensor, ours: Tensor, path) -> Tensor:
    """The file's absolute position table [1, (1 +) n, D] as the backbone's [1, 1 + g*g, D]:
    a missing class-token row added as zeros, another grid resized bicubically."""
    table = table.reshape(1, -1, table.shape[-1])
    side, ours_side = _grid_side(table.shape[1]), _grid_side(ours.shape[1] - 1)
    if side is None:  # a class token's row first
        side = _grid_side(table.shape[1] - 1)
    else:
        table = torch.cat([table.new_zeros(1, 1, table.shape[-1]), table], dim=1)
    if side is None:
        raise CheckpointMismatchError(f"{path}: the position table of {table.shape[1]} rows is "
                                      "not a square grid")  # fmt: skip
    if side != ours_side:
        print(f"{path}: position table of a {side} x {side} patch grid resized bicubically to "
              f"the backbone's {ours_side} x {ours_side} (its pretrain_image_size)",
              file=sys.stderr)  # fmt: skip
        table = resize_position_embedding(table, (ours_side, ours_side))
    return table


def _grid_side(rows: int) -> int | None:
    side = round(rows**0.5)
    return side if side * side == rows and rows > 1 else None


def _checked_shapes(state: dict[str, Tensor], backbone: nn.Module, refuse) -> dict[str, Tensor]:
    expected = backbone.state_dict()
    wrong = [f"{k} {tuple(v.shape)} against {tuple(expected[k].shape)}"
             for k, v in state.items() if v.shape != expected[k].shape]  # fmt: skip
    if wrong:
        stem = " (another stem)" if wrong[0].startswith("conv1.") else ""
        raise refuse(f"weights of another shape{stem}: {', '.join(wrong[:3])}")
    return {k: v.to(expected[k].dtype) for k, v in state.items()}
