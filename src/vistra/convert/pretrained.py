"""A Hugging Face ``save_pretrained`` folder (or a cached model id) -> a vistra network with the
file's weights and what inference needs: kind, category names (``id2label``), preprocessing
(``preprocessor_config.json``).

``config.json`` is read as data: only the sizes below are taken from it, checked, and a
family vistra does not convert is refused in one line. A ``save_pretrained`` file leaves out
the values equal to transformers' defaults, so those defaults are written here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from vistra.convert.hub import model_folder, weight_file

KINDS = {"detr": "detection", "mask2former": "segmentation", "vit_mae": "embedding"}
DETR_DEFAULTS = dict(d_model=256, encoder_attention_heads=8, decoder_attention_heads=8,
                     encoder_layers=6, decoder_layers=6, encoder_ffn_dim=2048,
                     decoder_ffn_dim=2048, num_queries=100, dilation=False)  # fmt: skip
MASK2FORMER_DEFAULTS = dict(hidden_dim=256, mask_feature_size=256, feature_size=256,
                            encoder_layers=6, encoder_feedforward_dim=1024, decoder_layers=10,
                            dim_feedforward=2048, num_attention_heads=8,
                            num_queries=100)  # fmt: skip
SWIN_DEFAULTS = dict(embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24], window_size=7)
RESNETS = {((3, 4, 6, 3), "bottleneck"): "resnet50", ((3, 4, 23, 3), "bottleneck"): "resnet101",
           ((2, 2, 2, 2), "basic"): "resnet18", ((3, 4, 6, 3), "basic"): "resnet34"}  # fmt: skip
MAE_DEFAULTS = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, decoder_intermediate_size=2048, image_size=224,
                    patch_size=16, decoder_hidden_size=512, decoder_num_hidden_layers=8,
                    decoder_num_attention_heads=16, mask_ratio=0.75,
                    norm_pix_loss=False)  # fmt: skip


class PretrainedError(ValueError):
    """A Hugging Face folder vistra cannot build (the message names the file and field)."""


def read_json(path: Path) -> dict:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PretrainedError(f"{path}: not found (a save_pretrained folder has one)") from None
    except (OSError, ValueError) as error:
        raise PretrainedError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(values, dict):
        raise PretrainedError(f"{path}: not a JSON object")
    return values


def pretrained(name: str | Path):
    """``(network with the file's weights, kind, names, preprocess dict)`` of a model id or
    ``save_pretrained`` folder."""
    folder = model_folder(name)
    if folder is None:
        raise PretrainedError(f"{name}: neither a folder nor a Hugging Face model id")
    config = read_json(folder / "config.json")
    family = config.get("model_type")
    if family not in KINDS:
        raise PretrainedError(f"{folder / 'config.json'}: model_type {family!r}; vistra converts "
                              f"{', '.join(sorted(KINDS))}")  # fmt: skip
    weights = weight_file(folder)
    _check_size(family, config, folder / "config.json", weights)
    network = BUILDERS[family](config, folder / "config.json")
    load_weights(family, network, weights)
    labels = config.get("id2label") or {}
    try:
        names = [str(labels.get(str(i), labels.get(i, i))) for i in range(len(labels))]
    except (TypeError, AttributeError):
        raise PretrainedError(f"{folder / 'config.json'}: id2label is not a mapping") from None
    return network.eval(), KINDS[family], names or None, preprocess_of(folder, family, config)


def _check_size(family: str, config: dict, where: Path, weights: Path) -> None:
    """The network ``config.json`` asks for, built on the meta device (nothing allocated),
    against the element count of the weight file's tensors: a file cannot ask for more memory
    than its own weights take (50 % more allowed: a ViTMAE file without its decoder)."""
    import torch

    with torch.device("meta"):
        wanted = sum(p.numel() for p in BUILDERS[family](config, where).parameters())
    held = _element_count(weights)
    if wanted > 1.5 * held:
        raise PretrainedError(f"{where}: asks for a network of {wanted:,} weights, but "
                              f"{weights.name} holds {held:,}")  # fmt: skip


def _element_count(path: Path) -> int:
    """Elements of every tensor of a weight file, read from its header (safetensors) or
    memory-mapped (``.bin``): nothing is loaded."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as file:
            keys = file.keys()  # safe_open is no mapping: it does not iterate
            shapes = [file.get_slice(key).get_shape() for key in keys]
        return sum(math.prod(shape) for shape in shapes)
    import torch

    from vistra.convert.files import unwrap_state_dict

    state = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    return sum(t.numel() for t in unwrap_state_dict(state, path).values())


def _sizes(config: dict, defaults: dict, where: Path) -> dict:
    values = {key: config.get(key, default) for key, default in defaults.items()}
    for key, value in values.items():
        if not isinstance(value, (int, float, bool, list)) or isinstance(value, bool) != isinstance(
            defaults[key], bool
        ):
            raise PretrainedError(f"{where}: {key} is {value!r}, not a size")
    return values


def _num_labels(config: dict, where: Path) -> int:
    labels = config.get("id2label") or {}
    count = len(labels) if isinstance(labels, dict) and labels else config.get("num_labels")
    if not isinstance(count, int) or count < 1:
        raise PretrainedError(f"{where}: no id2label (the classes) to size the class head by")
    return count


def detr(config: dict, where: Path):
    from vistra.models import DETR

    sizes = _sizes(config, DETR_DEFAULTS, where)
    for encoder, decoder in (
        ("encoder_ffn_dim", "decoder_ffn_dim"),
        ("encoder_attention_heads", "decoder_attention_heads"),
    ):
        if sizes[encoder] != sizes[decoder]:
            sizes_given = f"{encoder} {sizes[encoder]} and {decoder} {sizes[decoder]}"
            raise PretrainedError(f"{where}: {sizes_given} differ (vistra's DETR has one of each)")
    backbone_config = config.get("backbone_config") or {}
    backbone = config.get("backbone") or backbone_config.get("backbone") or "resnet50"
    if backbone_config.get("model_type") == "resnet":
        backbone = _resnet(backbone_config, where)
    if not isinstance(backbone, str) or not backbone.startswith("resnet"):
        raise PretrainedError(f"{where}: backbone {backbone!r}; vistra's DETR converts ResNets")
    return DETR(_num_labels(config, where), backbone=backbone, dilation=bool(sizes["dilation"]),
                hidden_dim=sizes["d_model"], num_heads=sizes["encoder_attention_heads"],
                num_encoder_layers=sizes["encoder_layers"],
                num_decoder_layers=sizes["decoder_layers"], ffn_dim=sizes["encoder_ffn_dim"],
                num_queries=sizes["num_queries"])  # fmt: skip


def _resnet(backbone_config: dict, where: Path) -> str:
    key = (tuple(backbone_config.get("depths", (3, 4, 6, 3))),
           backbone_config.get("layer_type", "bottleneck"))  # fmt: skip
    if key not in RESNETS:
        raise PretrainedError(f"{where}: a ResNet of depths {list(key[0])} ({key[1]}) is not one "
                              f"of {', '.join(RESNETS.values())}")  # fmt: skip
    return RESNETS[key]


def mask2former(config: dict, where: Path):
    from vistra.models import Mask2Former

    sizes = _sizes(config, MASK2FORMER_DEFAULTS, where)
    if not sizes["hidden_dim"] == sizes["feature_size"] == sizes["mask_feature_size"]:
        raise PretrainedError(f"{where}: hidden_dim, feature_size and mask_feature_size differ")
    backbone_config = config.get("backbone_config") or {"model_type": "swin"}
    options = {}
    if backbone_config.get("model_type") == "swin":
        swin = _sizes(backbone_config, SWIN_DEFAULTS, where)
        # timm names the Swin; its sizes are given explicitly, so any Swin of the file builds.
        window = swin.pop("window_size")
        backbone = {7: "swin_tiny_patch4_window7_224", 12: "swin_base_patch4_window12_384"}.get(
            window
        )
        if backbone is None:
            raise PretrainedError(f"{where}: a Swin window of {window} (vistra: 7 or 12)")
        options = {**swin, "depths": tuple(swin["depths"]), "num_heads": tuple(swin["num_heads"])}
    elif backbone_config.get("model_type") == "resnet":
        backbone = _resnet(backbone_config, where)
    else:
        raise PretrainedError(f"{where}: backbone {backbone_config.get('model_type')!r}; vistra's "
                              "Mask2Former converts Swin and ResNet")  # fmt: skip
    return Mask2Former(_num_labels(config, where), backbone=backbone, backbone_options=options,
                       dim=sizes["hidden_dim"], mask_dim=sizes["mask_feature_size"],
                       pixel_decoder_layers=sizes["encoder_layers"],
                       pixel_ffn_dim=sizes["encoder_feedforward_dim"],
                       decoder_layers=sizes["decoder_layers"] - 1,
                       ffn_dim=sizes["dim_feedforward"], heads=sizes["num_attention_heads"],
                       num_queries=sizes["num_queries"])  # fmt: skip


def masked_autoencoder(config: dict, where: Path):
    from vistra.models import MaskedAutoencoder
    from vistra.models.layers.vit import PRESETS

    sizes = _sizes(config, MAE_DEFAULTS, where)
    width, heads = sizes["hidden_size"], sizes["num_attention_heads"]
    size = next((name for name, (w, _, h) in PRESETS.items() if (w, h) == (width, heads)), None)
    if size is None:
        raise PretrainedError(f"{where}: hidden_size {width} with {heads} heads is no ViT size "
                              f"vistra builds ({', '.join(PRESETS)})")  # fmt: skip
    ratio = sizes["intermediate_size"] / width
    if sizes["decoder_intermediate_size"] != ratio * sizes["decoder_hidden_size"]:
        raise PretrainedError(f"{where}: the decoder's MLP ratio differs from the encoder's "
                              f"({ratio:g}); vistra's MAE has one")  # fmt: skip
    return MaskedAutoencoder(size, image_size=sizes["image_size"], patch_size=sizes["patch_size"],
                             mlp_ratio=ratio,
                             decoder_width=sizes["decoder_hidden_size"],
                             decoder_depth=sizes["decoder_num_hidden_layers"],
                             decoder_heads=sizes["decoder_num_attention_heads"],
                             mask_ratio=sizes["mask_ratio"],
                             norm_pix_loss=bool(sizes["norm_pix_loss"]),
                             depth=sizes["num_hidden_layers"])  # fmt: skip


BUILDERS = {"detr": detr, "mask2former": mask2former, "vit_mae": masked_autoencoder}


def load_weights(family: str, network, path: Path) -> None:
    """The family's converter (Hugging Face names -> vistra's), every weight checked."""
    from vistra.convert.detr import load_detr_weights
    from vistra.convert.mae import load_mae_weights
    from vistra.convert.mask2former import load_mask2former_weights

    if family == "detr":
        load_detr_weights(network, path)
    elif family == "mask2former":
        load_mask2former_weights(network, path)
    else:  # a ViTMAEModel file has no decoder: embeddings need only the encoder
        load_mae_weights(network, path, encoder_only=True)


def preprocess_of(folder: Path, family: str, config: dict) -> dict:
    """The preprocessing of ``preprocessor_config.json`` as vistra's ``Preprocess`` (shortest /
    longest edge, mean and std, padding multiple); the family's default without one."""
    path = folder / "preprocessor_config.json"
    values = read_json(path) if path.is_file() else {}
    mean = values.get("image_mean", [0.485, 0.456, 0.406])
    std = values.get("image_std", [0.229, 0.224, 0.225])
    size = values.get("size", {})
    if family == "vit_mae":
        side = size.get("height", config.get("image_size", 224)) if isinstance(size, dict) else size
        return {"resize": "center_crop", "size": int(side), "mean": mean, "std": std}
    if not isinstance(size, dict):
        size = {"shortest_edge": size}
    result = {"resize": "shorter_side", "size": int(size.get("shortest_edge", 800)),
              "max_size": int(size.get("longest_edge", 1333)), "mean": mean,
              "std": std}  # fmt: skip
    if family == "mask2former":
        result["pad_multiple"] = int(values.get("size_divisor", 32) or 1)
    return result
