"""Mask2Former against Hugging Face ``Mask2FormerForUniversalSegmentation``, same random weights.

The peer's Swin backbone is replaced by vistra's timm ResNet-18 (one module shared by both), so
the comparison covers exactly what Mask2Former adds: the deformable pixel decoder, the
masked-attention decoder, the heads (weights converted by ``mask2former_state_dict_from_hf``,
so the converter is tested too) and the point-sampled loss (same seed = same points).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from vistra.convert.mask2former import mask2former_state_dict_from_hf
from vistra.losses import MaskHungarianMatcher, MaskSetCriterion
from vistra.models import Mask2Former

transformers = pytest.importorskip("transformers")

SIZES = dict(dim=64, mask_dim=64, pixel_decoder_layers=2, pixel_ffn_dim=96, decoder_layers=4,
             ffn_dim=128, heads=8, num_queries=12)  # fmt: skip


class SharedBackbone(torch.nn.Module):
    """Presents vistra's backbone with the interface HF's pixel-level module expects."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.channels = backbone, backbone.channels

    def forward(self, images):
        return SimpleNamespace(feature_maps=tuple(self.inner(images)))


def _randomize(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point() or "empty_weight" in name:
                continue
            if "running_var" in name:
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif "norm" in name and name.endswith("weight"):
                tensor.copy_(1 + 0.1 * torch.randn(tensor.shape, generator=generator))
            else:
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))


def _pair(num_classes: int = 5, num_points: int = 256):
    ours = Mask2Former(num_classes, backbone="resnet18", frozen_batchnorm=True, **SIZES).eval()
    config = transformers.Mask2FormerConfig(
        backbone_config=dict(model_type="swin", embed_dim=64, depths=[1, 1, 1, 1],
                             num_heads=[1, 2, 4, 8],
                             out_features=["stage1", "stage2", "stage3", "stage4"]),
        num_labels=num_classes, feature_size=SIZES["dim"], mask_feature_size=SIZES["mask_dim"],
        hidden_dim=SIZES["dim"], encoder_layers=SIZES["pixel_decoder_layers"],
        encoder_feedforward_dim=SIZES["pixel_ffn_dim"],
        decoder_layers=SIZES["decoder_layers"] + 1, dim_feedforward=SIZES["ffn_dim"],
        num_attention_heads=SIZES["heads"], num_queries=SIZES["num_queries"],
        train_num_points=num_points,
    )  # fmt: skip
    peer = transformers.Mask2FormerForUniversalSegmentation(config).eval()
    peer.model.pixel_level_module.encoder = SharedBackbone(ours.backbone)
    _randomize(peer, 0)
    state = mask2former_state_dict_from_hf(peer.state_dict())
    state = {k.replace("backbone.body.inner.body.", "backbone.body."): v for k, v in state.items()}
    ours.load_state_dict(state, strict=True)
    return ours, peer


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def _targets(generator: torch.Generator, size: int) -> list[dict]:
    targets = []
    for count, labels in ((3, [0, 4, 2]), (1, [3])):
        masks = torch.zeros(count, size, size, dtype=torch.bool)
        for index in range(count):
            y0, x0 = torch.randint(0, size // 2, (2,), generator=generator).tolist()
            masks[index, y0 : y0 + size // 3, x0 : x0 + size // 4] = True
        targets.append({"labels": torch.tensor(labels), "masks": masks})
    return targets


def test_class_and_mask_logits_match_hugging_face_at_every_layer():
    ours, peer = _pair()
    images = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mine = ours(images)
        theirs = peer(pixel_values=images, output_auxiliary_logits=True)
    assert mine["pred_masks"].shape == (2, SIZES["num_queries"], 24, 32)
    assert _relative_error(mine["pred_logits"], theirs.class_queries_logits) < 1e-4
    assert _relative_error(mine["pred_masks"], theirs.masks_queries_logits) < 1e-4
    assert len(mine["aux_outputs"]) == len(theirs.auxiliary_logits) == SIZES["decoder_layers"]
    for ours_aux, peer_aux in zip(mine["aux_outputs"], theirs.auxiliary_logits):
        assert _relative_error(ours_aux["pred_logits"], peer_aux["class_queries_logits"]) < 1e-4
        assert _relative_error(ours_aux["pred_masks"], peer_aux["masks_queries_logits"]) < 1e-4
    # Masked attention is active: some queries see only part of the map at the first layer.
    prediction = mine["aux_outputs"][0]["pred_masks"]
    foreground = (prediction.sigmoid() >= 0.5).float().mean((-2, -1))
    assert ((foreground > 0) & (foreground < 1)).any()


def test_channels_last_gives_the_hugging_face_numbers_and_gradients():
    ours, peer = _pair()
    nhwc = Mask2Former(5, backbone="resnet18", frozen_batchnorm=True, channels_last=True,
                       **SIZES)  # fmt: skip
    nhwc.load_state_dict(ours.state_dict())
    assert nhwc.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = peer(pixel_values=images)
    mine = nhwc.eval()(images)
    assert _relative_error(mine["pred_masks"], theirs.masks_queries_logits) < 1e-4
    mine["pred_masks"].square().mean().backward()
    ours(images)["pred_masks"].square().mean().backward()
    references = dict(ours.named_parameters())
    for name, weight in nhwc.named_parameters():
        if weight.grad is not None:
            assert _relative_error(weight.grad, references[name].grad) < 1e-3, name


def test_point_sampled_loss_matches_hugging_face_with_the_same_points():
    num_points = 256
    ours, peer = _pair(num_points=num_points)
    images = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    targets = _targets(torch.Generator().manual_seed(3), 96)
    criterion = MaskSetCriterion(5, MaskHungarianMatcher(num_points=num_points),
                                 num_points=num_points)  # fmt: skip
    torch.manual_seed(7)
    terms = criterion(ours(images), targets)
    with torch.no_grad():
        outputs = peer(pixel_values=images, output_auxiliary_logits=True)
    torch.manual_seed(7)  # the peer draws its points in the same order: the same points
    peer_terms = peer.criterion(
        outputs.masks_queries_logits, outputs.class_queries_logits,
        [t["masks"].float() for t in targets], [t["labels"] for t in targets],
        outputs.auxiliary_logits,
    )  # fmt: skip
    names = {"loss_cross_entropy": "loss_ce", "loss_mask": "loss_mask", "loss_dice": "loss_dice"}
    compared = 0
    for peer_name, value in peer_terms.items():
        base, _, index = (
            peer_name.rpartition("_") if peer_name[-1].isdigit() else (peer_name, "", "")
        )
        name = names[base] + (f"_{index}" if index else "")
        assert abs(terms[name].item() - value.item()) <= 1e-4 * abs(value.item()), name
        compared += 1
    assert compared == 3 * (SIZES["decoder_layers"] + 1)
    assert criterion.weight_of("loss_dice_2") == 5.0 and criterion.weight_of("loss_ce") == 2.0


def _hf_swin_model(seed: int):
    """A small random HF Mask2Former on a Swin backbone."""
    swin = dict(embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], window_size=7)
    config = transformers.Mask2FormerConfig(
        backbone_config=dict(model_type="swin", **swin,
                             out_features=["stage1", "stage2", "stage3", "stage4"]),
        num_labels=5, feature_size=64, mask_feature_size=64, hidden_dim=64, encoder_layers=1,
        encoder_feedforward_dim=96, decoder_layers=3, dim_feedforward=128, num_attention_heads=8,
        num_queries=12,
    )  # fmt: skip
    peer = transformers.Mask2FormerForUniversalSegmentation(config).eval()
    _randomize(peer, seed)
    return peer


SWIN_SIZES = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))  # a shift in each


def _vistra_swin_model() -> Mask2Former:
    """vistra's Mask2Former of ``_hf_swin_model``'s sizes, on the Swin a user names (only its
    widths and depths shrunk)."""
    return Mask2Former(
        5, backbone="swin_tiny_patch4_window7_224", dim=64, mask_dim=64, pixel_decoder_layers=1,
        pixel_ffn_dim=96, decoder_layers=2, ffn_dim=128, heads=8, num_queries=12,
        backbone_options=SWIN_SIZES,
    ).eval()  # fmt: skip


@pytest.mark.parametrize("size", [(224, 224), (448, 448), (512, 512), (256, 320), (1024, 1024)])
def test_swin_features_equal_hugging_face_swin_at_every_size(size):
    """Every stage's normalised map equals HF's ``SwinBackbone`` (which pads each stage to
    window multiples before the cyclic shift and shifts every odd block, as the original
    D2SwinTransformer) at the sizes people run: window multiples or not, square or not."""
    from vistra.models.mask2former.model import MultiScaleBackbone

    stages = ["stage1", "stage2", "stage3", "stage4"]
    config = transformers.SwinConfig(embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4],
                                     window_size=7, out_features=stages)  # fmt: skip
    peer = transformers.SwinBackbone(config).eval()
    _randomize(peer, 12)
    ours = MultiScaleBackbone("swin_tiny_patch4_window7_224", False, (), None, **SWIN_SIZES)
    prefix = "model.pixel_level_module.encoder."
    state = mask2former_state_dict_from_hf({prefix + k: v for k, v in peer.state_dict().items()})
    ours.load_state_dict({k[len("backbone.") :]: v for k, v in state.items()}, strict=True)
    images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(13))
    with torch.no_grad():
        mine, theirs = ours.eval()(images), peer(images).feature_maps
    for stage, (a, b) in enumerate(zip(mine, theirs)):
        assert a.shape == b.shape
        assert _relative_error(a, b) < 1e-5, f"stage {stage + 1} at {size}"


@pytest.mark.parametrize("size", [(512, 512), (256, 320)])
def test_hugging_face_swin_checkpoint_loads_and_matches(size):
    """A whole HF Mask2Former with a Swin backbone (random weights) converted into vistra's
    Mask2Former gives the same logits at sizes whose Swin maps are not window multiples."""
    peer, ours = _hf_swin_model(4), _vistra_swin_model()
    ours.load_state_dict(mask2former_state_dict_from_hf(peer.state_dict()), strict=True)
    images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        mine, theirs = ours(images), peer(pixel_values=images)
    assert _relative_error(mine["pred_logits"], theirs.class_queries_logits) < 1e-4
    assert _relative_error(mine["pred_masks"], theirs.masks_queries_logits) < 1e-4


def test_hugging_face_resnet_backbone_checkpoint_loads_and_matches():
    config = transformers.Mask2FormerConfig(
        backbone_config=transformers.ResNetConfig(
            layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512],
            embedding_size=64, out_features=["stage1", "stage2", "stage3", "stage4"]),
        num_labels=5, feature_size=64, mask_feature_size=64, hidden_dim=64, encoder_layers=1,
        encoder_feedforward_dim=96, decoder_layers=3, dim_feedforward=128, num_attention_heads=8,
        num_queries=12,
    )  # fmt: skip
    peer = transformers.Mask2FormerForUniversalSegmentation(config).eval()
    _randomize(peer, 6)
    ours = Mask2Former(5, backbone="resnet18", dim=64, mask_dim=64, pixel_decoder_layers=1,
                       pixel_ffn_dim=96, decoder_layers=2, ffn_dim=128, heads=8,
                       num_queries=12).eval()  # fmt: skip
    ours.load_state_dict(mask2former_state_dict_from_hf(peer.state_dict()), strict=True)
    images = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        mine, theirs = ours(images), peer(pixel_values=images)
    assert _relative_error(mine["pred_logits"], theirs.class_queries_logits) < 1e-4
    assert _relative_error(mine["pred_masks"], theirs.masks_queries_logits) < 1e-4


def _detectron2_name(key: str) -> str:
    """vistra -> detectron2 / Mask2Former repository names, written from their module layout."""
    import re

    rules = [
        (r"^backbone\.body\.conv1\.weight$", "backbone.stem.conv1.weight"),
        (r"^backbone\.body\.bn1\.", "backbone.stem.conv1.norm."),
        (r"^backbone\.body\.layer(\d)\.(\d+)\.downsample\.0\.",
         lambda m: f"backbone.res{int(m.group(1)) + 1}.{m.group(2)}.shortcut."),
        (r"^backbone\.body\.layer(\d)\.(\d+)\.downsample\.1\.",
         lambda m: f"backbone.res{int(m.group(1)) + 1}.{m.group(2)}.shortcut.norm."),
        (r"^backbone\.body\.layer(\d)\.(\d+)\.conv(\d)\.",
         lambda m: f"backbone.res{int(m.group(1)) + 1}.{m.group(2)}.conv{m.group(3)}."),
        (r"^backbone\.body\.layer(\d)\.(\d+)\.bn(\d)\.",
         lambda m: f"backbone.res{int(m.group(1)) + 1}.{m.group(2)}.conv{m.group(3)}.norm."),
        (r"^pixel_decoder\.level_embed$", "sem_seg_head.pixel_decoder.transformer.level_embed"),
        (r"^pixel_decoder\.layers\.", "sem_seg_head.pixel_decoder.transformer.encoder.layers."),
        (r"^pixel_decoder\.lateral\.0\.", "sem_seg_head.pixel_decoder.adapter_1."),
        (r"^pixel_decoder\.lateral\.1\.", "sem_seg_head.pixel_decoder.adapter_1.norm."),
        (r"^pixel_decoder\.output\.0\.", "sem_seg_head.pixel_decoder.layer_1."),
        (r"^pixel_decoder\.output\.1\.", "sem_seg_head.pixel_decoder.layer_1.norm."),
        (r"^pixel_decoder\.", "sem_seg_head.pixel_decoder."),
        (r"^decoder\.layers\.(\d+)\.cross_attn\.",
         r"sem_seg_head.predictor.transformer_cross_attention_layers.\1.multihead_attn."),
        (r"^decoder\.layers\.(\d+)\.norm1\.",
         r"sem_seg_head.predictor.transformer_cross_attention_layers.\1.norm."),
        (r"^decoder\.layers\.(\d+)\.self_attn\.",
         r"sem_seg_head.predictor.transformer_self_attention_layers.\1.self_attn."),
        (r"^decoder\.layers\.(\d+)\.norm2\.",
         r"sem_seg_head.predictor.transformer_self_attention_layers.\1.norm."),
        (r"^decoder\.layers\.(\d+)\.ffn\.", r"sem_seg_head.predictor.transformer_ffn_layers.\1."),
        (r"^decoder\.layers\.(\d+)\.norm3\.",
         r"sem_seg_head.predictor.transformer_ffn_layers.\1.norm."),
        (r"^decoder\.", "sem_seg_head.predictor."),
    ]  # fmt: skip
    for pattern, replacement in rules:
        renamed = re.sub(pattern, replacement, key)
        if renamed != key:
            return renamed
    raise AssertionError(f"no detectron2 name for {key}")


def _swin_repository_names(hf_state: dict) -> dict:
    """A Hugging Face Swin backbone's weights under the Swin repository's (D2SwinTransformer's)
    names, written from that module layout: q/k/v stacked in ``attn.qkv``, patch merging at the
    end of its stage, output norms ``normN``, plus the ``relative_position_index`` buffers."""
    import re

    prefix = "model.pixel_level_module.encoder."
    rules = [
        (r"^swin\.embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
        (r"^swin\.embeddings\.norm\.", "patch_embed.norm."),
        (r"^hidden_states_norms\.stage(\d)\.", lambda m: f"norm{int(m.group(1)) - 1}."),
        (r"^swin\.encoder\.layers\.", "layers."),
        (r"\.attention\.o_proj\.", ".attn.proj."),
        (r"\.attention\.relative_position_bias\.", ".attn."),
        (r"\.layernorm_before\.", ".norm1."),
        (r"\.layernorm_after\.", ".norm2."),
    ]  # fmt: skip
    out = {}
    for key, value in hf_state.items():
        if not key.startswith(prefix) or key.startswith(prefix + "swin.layernorm."):
            continue
        name = key[len(prefix) :]
        for pattern, replacement in rules:
            name = re.sub(pattern, replacement, name)
        projection = re.match(r"(.*)\.attention\.([qkv])_proj\.(weight|bias)$", name)
        if projection is None:
            out[f"backbone.{name}"] = value
        elif projection.group(2) == "q":
            block, kind = projection.group(1), projection.group(3)
            parts = [hf_state[f"{prefix}swin.encoder.{block}.attention.{p}_proj.{kind}"]
                     for p in "qkv"]  # fmt: skip
            out[f"backbone.{block}.attn.qkv.{kind}"] = torch.cat(parts)
    for key in [k for k in out if k.endswith("relative_position_bias_table")]:
        out[key.replace("relative_position_bias_table", "relative_position_index")] = torch.zeros(
            49, 49, dtype=torch.long
        )
    return out


def test_original_repository_swin_checkpoint_loads_and_matches_hugging_face(tmp_path):
    """The Mask2Former repository's Swin checkpoints (D2SwinTransformer names): an HF model's
    Swin weights renamed to that layout, its heads to detectron2's, load into vistra's model on
    timm's Swin and give the HF model's logits."""
    from vistra.convert.mask2former import load_mask2former_weights

    peer = _hf_swin_model(10)
    heads = _vistra_swin_model()
    heads.load_state_dict(mask2former_state_dict_from_hf(peer.state_dict()))
    original = _swin_repository_names(peer.state_dict())
    original |= {_detectron2_name(k): v for k, v in heads.state_dict().items()
                 if not k.startswith("backbone.")}  # fmt: skip
    torch.save({"model": original}, tmp_path / "model_final_swin.pth")
    loaded = load_mask2former_weights(_vistra_swin_model(), tmp_path / "model_final_swin.pth")
    images = torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        mine, theirs = loaded(images), peer(pixel_values=images)
    assert _relative_error(mine["pred_logits"], theirs.class_queries_logits) < 1e-4
    assert _relative_error(mine["pred_masks"], theirs.masks_queries_logits) < 1e-4
