"""The converters against checkpoint layouts built independently of them.

Each original checkpoint is the state dict of a module tree assembled here from the libraries
the original code is built on, with the original code's module names: DETR's torchvision
ResNet-50 (frozen BatchNorm, ``IntermediateLayerGetter``) and ``nn.TransformerEncoderLayer`` /
``DecoderLayer``; MAE's timm ``VisionTransformer`` and timm ``Block`` decoder; Mask2Former's
detectron2 names for a torchvision ResNet-50, its deformable pixel decoder and its
``nn.MultiheadAttention`` predictor. The key sets and shapes are therefore those of the real
files, not of vistra's models; the file must load strictly, and the pieces the libraries can
run on their own (the backbone, a transformer layer, the encoder, the heads) must give the
numbers of the loaded vistra model.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.misc import FrozenBatchNorm2d

from vistra.convert import load_detr_weights, load_mae_weights
from vistra.convert.mask2former import load_mask2former_weights
from vistra.models import DETR, Mask2Former, MaskedAutoencoder


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Every float tensor random (variances positive), so a misplaced weight shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif name.endswith(("norm.weight", "norm1.weight", "norm2.weight", "norm3.weight")):
                tensor.copy_(1 + 0.1 * torch.randn(tensor.shape, generator=generator))
            else:
                tensor.copy_(0.05 * torch.randn(tensor.shape, generator=generator))
    return module.eval()


def close(a: torch.Tensor, b: torch.Tensor, tolerance: float = 1e-5) -> bool:
    return bool((a - b).norm() <= tolerance * b.norm().clamp_min(1e-12))


def namespace(**children: nn.Module) -> nn.Module:
    """A plain module holding named children (for the original code's nesting)."""
    module = nn.Module()
    for name, child in children.items():
        module.add_module(name, child)
    return module


# -- DETR (facebookresearch/detr) ---------------------------------------------------------------

D, HEADS, FFN, QUERIES, CLASSES = 64, 4, 128, 5, 3


class Mlp(nn.Module):
    """DETR's box head: ``layers`` of Linear with ReLU between."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))

    def forward(self, x):
        for index, layer in enumerate(self.layers):
            x = layer(x) if index == len(self.layers) - 1 else torch.relu(layer(x))
        return x


def original_detr() -> nn.Module:
    resnet = torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d)
    body = IntermediateLayerGetter(resnet, return_layers={"layer4": "0"})
    options = dict(dropout=0.0, batch_first=True)
    encoder = nn.ModuleList([nn.TransformerEncoderLayer(D, HEADS, FFN, **options)])
    decoder = nn.ModuleList(nn.TransformerDecoderLayer(D, HEADS, FFN, **options) for _ in "ab")
    return randomize(namespace(
        backbone=nn.ModuleList([namespace(body=body)]),  # Joiner(backbone, position encoding)
        transformer=namespace(encoder=namespace(layers=encoder),
                              decoder=namespace(layers=decoder, norm=nn.LayerNorm(D))),
        input_proj=nn.Conv2d(2048, D, 1),
        query_embed=nn.Embedding(QUERIES, D),
        class_embed=nn.Linear(D, CLASSES + 1),
        bbox_embed=Mlp([D, D, D, 4]),
    ), seed=1)  # fmt: skip


def test_original_detr_file_loads_and_each_part_computes_what_torch_computes(tmp_path):
    original = original_detr()
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


def original_mae() -> nn.Module:
    """MaskedAutoencoderViT's tree: timm's ViT encoder parts, a timm ``Block`` decoder."""
    from timm.models.vision_transformer import Block, VisionTransformer

    encoder = VisionTransformer(img_size=32, patch_size=8, embed_dim=192, depth=2, num_heads=3,
                                num_classes=0)  # fmt: skip
    tree = namespace(
        patch_embed=encoder.patch_embed, blocks=encoder.blocks, norm=encoder.norm,
        decoder_embed=nn.Linear(192, 64), decoder_blocks=nn.ModuleList(
            Block(64, 2, qkv_bias=True) for _ in range(1)),
        decoder_norm=nn.LayerNorm(64), decoder_pred=nn.Linear(64, 8 * 8 * 3),
    )  # fmt: skip
    tree.cls_token, tree.pos_embed = encoder.cls_token, encoder.pos_embed
    tree.mask_token = nn.Parameter(torch.zeros(1, 1, 64))
    tree.decoder_pos_embed = nn.Parameter(torch.zeros(1, 17, 64))
    randomize(tree, seed=3)
    return tree, encoder.eval()


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


def detectron2_resnet50() -> tuple[dict, nn.Module]:
    """detectron2's ResNet-50 names (``stem.conv1`` + ``.norm``, ``resN.M.convK`` + ``.norm``,
    ``shortcut``; stride in the 3x3 convolution, as Mask2Former's R50) over a torchvision
    ResNet-50, which runs the same network."""
    resnet = randomize(torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d), seed=6)
    names = {}
    for key, value in resnet.state_dict().items():
        if key.startswith("fc."):
            continue
        parts = key.split(".")
        if parts[0] == "conv1":
            name = "stem.conv1." + parts[1]
        elif parts[0] == "bn1":
            name = "stem.conv1.norm." + parts[1]
        else:  # layerN.M.(convK|bnK|downsample.0|downsample.1).field
            stage, block, module, *rest = parts
            res = f"res{int(stage[-1]) + 1}.{block}"
            if module.startswith("conv"):
                name = f"{res}.{module}.{rest[0]}"
            elif module.startswith("bn"):
                name = f"{res}.conv{module[-1]}.norm.{rest[0]}"
            else:  # downsample.0 = conv, downsample.1 = norm
                name = f"{res}.shortcut.{rest[1]}" if rest[0] == "0" else (
                    f"{res}.shortcut.norm.{rest[1]}")  # fmt: skip
        names[f"backbone.{name}"] = value
    return names, IntermediateLayerGetter(resnet, {f"layer{i}": str(i) for i in range(1, 5)})


def deformable_attention(levels: int = 3, heads: int = 8, points: int = 4) -> nn.Module:
    samples = heads * levels * points
    return namespace(sampling_offsets=nn.Linear(M_DIM, samples * 2),
                     attention_weights=nn.Linear(M_DIM, samples),
                     value_proj=nn.Linear(M_DIM, M_DIM),
                     output_proj=nn.Linear(M_DIM, M_DIM))  # fmt: skip


def group_norm_conv(cin: int, cout: int, kernel: int) -> nn.Module:
    """detectron2's Conv2d with a ``norm`` child (no bias with a norm)."""
    conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
    conv.norm = nn.GroupNorm(32, cout)
    return conv


def original_mask2former_heads() -> nn.Module:
    pixel_decoder = namespace(
        input_proj=nn.ModuleList(nn.Sequential(nn.Conv2d(c, M_DIM, 1), nn.GroupNorm(32, M_DIM))
                                 for c in (2048, 1024, 512)),
        transformer=namespace(encoder=namespace(layers=nn.ModuleList(
            namespace(self_attn=deformable_attention(), norm1=nn.LayerNorm(M_DIM),
                      linear1=nn.Linear(M_DIM, 96), linear2=nn.Linear(96, M_DIM),
                      norm2=nn.LayerNorm(M_DIM)) for _ in range(M_PIXEL_LAYERS)))),
        mask_features=nn.Conv2d(M_DIM, M_DIM, 1),
        adapter_1=group_norm_conv(256, M_DIM, 1),
        layer_1=group_norm_conv(M_DIM, M_DIM, 3),
    )  # fmt: skip
    pixel_decoder.transformer.level_embed = nn.Parameter(torch.zeros(3, M_DIM))

    def attention_layer(kind: str) -> nn.Module:
        return namespace(**{kind: nn.MultiheadAttention(M_DIM, 8), "norm": nn.LayerNorm(M_DIM)})

    predictor = namespace(
        transformer_self_attention_layers=nn.ModuleList(
            attention_layer("self_attn") for _ in range(M_LAYERS)),
        transformer_cross_attention_layers=nn.ModuleList(
            attention_layer("multihead_attn") for _ in range(M_LAYERS)),
        transformer_ffn_layers=nn.ModuleList(
            namespace(linear1=nn.Linear(M_DIM, 128), linear2=nn.Linear(128, M_DIM),
                      norm=nn.LayerNorm(M_DIM)) for _ in range(M_LAYERS)),
        decoder_norm=nn.LayerNorm(M_DIM), query_feat=nn.Embedding(M_QUERIES, M_DIM),
        query_embed=nn.Embedding(M_QUERIES, M_DIM), level_embed=nn.Embedding(3, M_DIM),
        class_embed=nn.Linear(M_DIM, M_CLASSES + 1), mask_embed=Mlp([M_DIM, M_DIM, M_DIM, M_DIM]),
    )  # fmt: skip
    return randomize(namespace(sem_seg_head=namespace(pixel_decoder=pixel_decoder,
                                                      predictor=predictor)), seed=7)  # fmt: skip


def test_original_mask2former_pkl_loads_strictly_and_its_backbone_is_torchvisions(tmp_path):
    import pickle

    backbone, torchvision_body = detectron2_resnet50()
    heads = original_mask2former_heads()
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
