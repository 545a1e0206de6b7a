"""The converters against checkpoint layouts built independently of them.

Each original checkpoint is the state dict of a module tree (``original_layouts``) assembled
from the libraries the original code is built on, with the original code's module names:
DETR's torchvision ResNet-50 (frozen BatchNorm, ``IntermediateLayerGetter``) and
``nn.TransformerEncoderLayer`` / ``DecoderLayer``; MAE's timm ``VisionTransformer`` and timm
``Block`` decoder; Mask2Former's detectron2 names for a torchvision ResNet-50, its deformable
pixel decoder and its ``nn.MultiheadAttention`` predictor. The key sets and shapes are
therefore those of the real files, not of vistra's models; the file must load strictly, and
the pieces the libraries can run on their own (the backbone, a transformer layer, the
encoder, the heads) must give the numbers of the loaded vistra model.
"""

from __future__ import annotations

import pytest
import torch
from original_layouts import (
    detectron2_resnet50,
    original_detr,
    original_mae,
    original_mask2former_heads,
)

from vistra.convert import load_detr_weights, load_mae_weights
from vistra.convert.mask2former import load_mask2former_weights
from vistra.models import DETR, Mask2Former, MaskedAutoencoder


def close(a: torch.Tensor, b: torch.Tensor, tolerance: float = 1e-5) -> bool:
    return bool((a - b).norm() <= tolerance * b.norm().clamp_min(1e-12))


# -- DETR (facebookresearch/detr) ---------------------------------------------------------------

D, HEADS, FFN, QUERIES, CLASSES = 64, 4, 128, 5, 3


def test_original_detr_file_loads_and_each_part_computes_what_torch_computes(tmp_path):
    original = original_detr(D, HEADS, FFN, QUERIES, CLASSES)
    torch.save({"model": original.state_dict()}, tmp_path / "detr-r50.pth")
    ours = DETR(CLASSES, backbone="resnet50", hidden_dim=D, num_heads=HEADS, num_encoder_layers=1,
                num_decoder_layers=2, ffn_dim=FFN, num_queries=QUERIES, dropout=0.0)  # fmt: skip
    ours = load_detr_weights(ours, tmp_path / "detr-r50.pth").eval()  # strict: every key used
    generator = torch.Generator().manual_seed(2)
    images = torch.randn(1, 3, 96, 128, generator=generator)
    tokens = torch.randn(1, 12, D, generator=generator)
    queries = torch.randn(1, QUERIES, D, generator=generator)
    everywhere = torch.ones(1, 12, dtype=torch.bool)
    with torch.no_grad():
        assert close(ours.backbone(images)[-1], original.backbone[0].body(images)["0"])
        assert close(ours.input_proj(tokens.new_ones(1, 2048, 2, 2)),
                     original.input_proj(tokens.new_ones(1, 2048, 2, 2)))  # fmt: skip
        # With zero position embeddings DETR's post-norm layers are torch's.
        zero = torch.zeros_like(tokens)
        assert close(ours.encoder_layers[0](tokens, zero, everywhere),
                     original.transformer.encoder.layers[0](tokens))  # fmt: skip
        for mine, theirs in zip(ours.decoder_layers, original.transformer.decoder.layers):
            assert close(mine(queries, torch.zeros_like(queries), tokens, zero, everywhere),
                         theirs(queries, tokens))  # fmt: skip
        assert close(ours.decoder_norm(queries), original.transformer.decoder.norm(queries))
        assert close(ours.class_embed(queries), original.class_embed(queries))
        assert close(ours.bbox_embed(queries), original.bbox_embed(queries))
        assert torch.equal(ours.query_embed.weight, original.query_embed.weight)
    other_classes = DETR(CLASSES + 4, backbone="resnet50", hidden_dim=D, num_heads=HEADS,
                         num_encoder_layers=1, num_decoder_layers=2, ffn_dim=FFN,
                         num_queries=QUERIES)  # fmt: skip
    with pytest.raises(ValueError, match="wrong shape"):  # unless new_classes=True is asked
        load_detr_weights(other_classes, tmp_path / "detr-r50.pth")


# -- MAE (facebookresearch/mae) -----------------------------------------------------------------


def test_original_mae_file_loads_and_its_encoder_is_timms_vit(tmp_path):
    tree, encoder = original_mae()
    torch.save({"model": tree.state_dict(), "epoch": 799}, tmp_path / "mae_pretrain.pth")
    ours = MaskedAutoencoder("tiny", image_size=32, patch_size=8, decoder_width=64,
                             decoder_depth=1, decoder_heads=2, depth=2)  # fmt: skip
    ours = load_mae_weights(ours, tmp_path / "mae_pretrain.pth").eval()  # strict
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        tokens = encoder.forward_features(images)  # final norm applied, class token first
        assert close(ours.forward_features(images, pool="cls"), tokens[:, 0])
        assert close(ours.forward_features(images, pool="avg"), tokens[:, 1:].mean(1))
        decoded = torch.randn(2, 17, 64, generator=torch.Generator().manual_seed(5))
        assert close(ours.decoder_blocks[0](decoded), tree.decoder_blocks[0](decoded))
        assert close(ours.decoder_pred(decoded), tree.decoder_pred(decoded))


# -- Mask2Former (facebookresearch/Mask2Former, detectron2 names) -------------------------------

M_DIM, M_QUERIES, M_CLASSES, M_LAYERS, M_PIXEL_LAYERS = 64, 6, 4, 3, 2


def test_original_mask2former_pkl_loads_strictly_and_its_backbone_is_torchvisions(tmp_path):
    import pickle

    backbone, torchvision_body = detectron2_resnet50()
    heads = original_mask2former_heads(
        M_DIM, M_QUERIES, M_CLASSES, M_LAYERS, M_PIXEL_LAYERS, pixel_ffn=96, ffn=128
    )
    state = {**backbone, **heads.state_dict()}
    # detectron2's model zoo .pkl: {"model": {name: numpy array}}
    with open(tmp_path / "model_final.pkl", "wb") as file:
        pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, "__author__": "d2"}, file)
    ours = Mask2Former(M_CLASSES, backbone="resnet50", dim=M_DIM, mask_dim=M_DIM,
                       pixel_decoder_layers=M_PIXEL_LAYERS, pixel_ffn_dim=96,
                       decoder_layers=M_LAYERS, ffn_dim=128, heads=8,
                       num_queries=M_QUERIES)  # fmt: skip
    ours = load_mask2former_weights(ours, tmp_path / "model_final.pkl").eval()  # strict
    images = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(8))
    queries = torch.randn(1, M_QUERIES, M_DIM, generator=torch.Generator().manual_seed(9))
    predictor = heads.sem_seg_head.predictor
    with torch.no_grad():
        theirs = torchvision_body(images)
        for stage, mine in enumerate(ours.backbone(images), start=1):
            assert close(mine, theirs[str(stage)]), f"res{stage + 1}"
        assert close(ours.decoder.class_embed(queries), predictor.class_embed(queries))
        assert close(ours.decoder.mask_embed(queries), predictor.mask_embed(queries))
