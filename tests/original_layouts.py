"""Checkpoint layouts of the original repositories, built independently of vistra.

Each is the state dict of a module tree assembled from the libraries the original code is
built on, under the original code's module names (facebookresearch/detr, facebookresearch/mae,
facebookresearch/Mask2Former with detectron2's names): the key sets and shapes of the real
files, not of vistra's models. The converter tests load them at small sizes; the README test
writes the files its Python examples load from them at the published sizes.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.misc import FrozenBatchNorm2d


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


def namespace(**children: nn.Module) -> nn.Module:
    """A plain module holding named children (for the original code's nesting)."""
    module = nn.Module()
    for name, child in children.items():
        module.add_module(name, child)
    return module


class Mlp(nn.Module):
    """DETR's box head: ``layers`` of Linear with ReLU between."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))

    def forward(self, x):
        for index, layer in enumerate(self.layers):
            x = layer(x) if index == len(self.layers) - 1 else torch.relu(layer(x))
        return x


def original_detr(
    dim: int,
    heads: int,
    ffn: int,
    queries: int,
    classes: int,
    encoder_layers: int = 1,
    decoder_layers: int = 2,
) -> nn.Module:
    """``detr-r50-*.pth``'s tree: DETR's torchvision ResNet-50 (frozen BatchNorm) under
    ``backbone.0.body``, ``nn.Transformer*Layer`` encoder and decoder, the heads."""
    resnet = torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d)
    body = IntermediateLayerGetter(resnet, return_layers={"layer4": "0"})
    options = dict(dropout=0.0, batch_first=True)
    encoder = nn.ModuleList(nn.TransformerEncoderLayer(dim, heads, ffn, **options)
                            for _ in range(encoder_layers))  # fmt: skip
    decoder = nn.ModuleList(nn.TransformerDecoderLayer(dim, heads, ffn, **options)
                            for _ in range(decoder_layers))  # fmt: skip
    return randomize(namespace(
        backbone=nn.ModuleList([namespace(body=body)]),  # Joiner(backbone, position encoding)
        transformer=namespace(encoder=namespace(layers=encoder),
                              decoder=namespace(layers=decoder, norm=nn.LayerNorm(dim))),
        input_proj=nn.Conv2d(2048, dim, 1),
        query_embed=nn.Embedding(queries, dim),
        class_embed=nn.Linear(dim, classes + 1),
        bbox_embed=Mlp([dim, dim, dim, 4]),
    ), seed=1)  # fmt: skip


def original_mae(
    image_size: int = 32,
    patch: int = 8,
    width: int = 192,
    depth: int = 2,
    heads: int = 3,
    decoder_width: int = 64,
    decoder_depth: int = 1,
    decoder_heads: int = 2,
) -> tuple[nn.Module, nn.Module]:
    """MaskedAutoencoderViT's tree: timm's ViT encoder parts, a timm ``Block`` decoder; and
    the timm ViT that runs its encoder."""
    from timm.models.vision_transformer import Block, VisionTransformer

    encoder = VisionTransformer(img_size=image_size, patch_size=patch, embed_dim=width,
                                depth=depth, num_heads=heads, num_classes=0)  # fmt: skip
    tokens = 1 + (image_size // patch) ** 2
    tree = namespace(
        patch_embed=encoder.patch_embed, blocks=encoder.blocks, norm=encoder.norm,
        decoder_embed=nn.Linear(width, decoder_width), decoder_blocks=nn.ModuleList(
            Block(decoder_width, decoder_heads, qkv_bias=True) for _ in range(decoder_depth)),
        decoder_norm=nn.LayerNorm(decoder_width),
        decoder_pred=nn.Linear(decoder_width, patch * patch * 3),
    )  # fmt: skip
    tree.cls_token, tree.pos_embed = encoder.cls_token, encoder.pos_embed
    tree.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_width))
    tree.decoder_pos_embed = nn.Parameter(torch.zeros(1, tokens, decoder_width))
    randomize(tree, seed=3)
    return tree, encoder.eval()


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


def deformable_attention(dim: int, levels: int = 3, heads: int = 8, points: int = 4) -> nn.Module:
    samples = heads * levels * points
    return namespace(sampling_offsets=nn.Linear(dim, samples * 2),
                     attention_weights=nn.Linear(dim, samples),
                     value_proj=nn.Linear(dim, dim),
                     output_proj=nn.Linear(dim, dim))  # fmt: skip


def group_norm_conv(cin: int, cout: int, kernel: int) -> nn.Module:
    """detectron2's Conv2d with a ``norm`` child (no bias with a norm)."""
    conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
    conv.norm = nn.GroupNorm(32, cout)
    return conv


def original_mask2former_heads(
    dim: int, queries: int, classes: int, layers: int, pixel_layers: int, pixel_ffn: int, ffn: int
) -> nn.Module:
    """``sem_seg_head``: the deformable pixel decoder and the masked-attention predictor."""
    pixel_decoder = namespace(
        input_proj=nn.ModuleList(nn.Sequential(nn.Conv2d(c, dim, 1), nn.GroupNorm(32, dim))
                                 for c in (2048, 1024, 512)),
        transformer=namespace(encoder=namespace(layers=nn.ModuleList(
            namespace(self_attn=deformable_attention(dim), norm1=nn.LayerNorm(dim),
                      linear1=nn.Linear(dim, pixel_ffn), linear2=nn.Linear(pixel_ffn, dim),
                      norm2=nn.LayerNorm(dim)) for _ in range(pixel_layers)))),
        mask_features=nn.Conv2d(dim, dim, 1),
        adapter_1=group_norm_conv(256, dim, 1),
        layer_1=group_norm_conv(dim, dim, 3),
    )  # fmt: skip
    pixel_decoder.transformer.level_embed = nn.Parameter(torch.zeros(3, dim))

    def attention_layer(kind: str) -> nn.Module:
        return namespace(**{kind: nn.MultiheadAttention(dim, 8), "norm": nn.LayerNorm(dim)})

    predictor = namespace(
        transformer_self_attention_layers=nn.ModuleList(
            attention_layer("self_attn") for _ in range(layers)),
        transformer_cross_attention_layers=nn.ModuleList(
            attention_layer("multihead_attn") for _ in range(layers)),
        transformer_ffn_layers=nn.ModuleList(
            namespace(linear1=nn.Linear(dim, ffn), linear2=nn.Linear(ffn, dim),
                      norm=nn.LayerNorm(dim)) for _ in range(layers)),
        decoder_norm=nn.LayerNorm(dim), query_feat=nn.Embedding(queries, dim),
        query_embed=nn.Embedding(queries, dim), level_embed=nn.Embedding(3, dim),
        class_embed=nn.Linear(dim, classes + 1), mask_embed=Mlp([dim, dim, dim, dim]),
    )  # fmt: skip
    return randomize(namespace(sem_seg_head=namespace(pixel_decoder=pixel_decoder,
                                                      predictor=predictor)), seed=7)  # fmt: skip
