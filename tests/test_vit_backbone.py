"""ViTDet's plain-ViT backbone: the trunk against Hugging Face's ``VitDetBackbone``, the simple
feature pyramid against the paper's description, the MAE repository's file at full size."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import transformers
from original_layouts import original_mae, randomize

from vistra.models import Mask2Former
from vistra.models.vit_pyramid import ViTPyramid


def relative_error(mine: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((mine - theirs).abs().max() / theirs.abs().max())


def hugging_face_vitdet(depth: int, global_blocks: tuple[int, ...]) -> torch.nn.Module:
    """ViT-B at ViTDet's settings (1024-pixel global relative-position tables, 14 x 14
    windows, a 224-pixel pre-training position table), with random weights everywhere."""
    config = transformers.VitDetConfig(
        hidden_size=768, num_hidden_layers=depth, num_attention_heads=12, mlp_ratio=4,
        image_size=1024, pretrain_image_size=224, patch_size=16, window_size=14,
        window_block_indices=[i for i in range(depth) if i not in global_blocks],
        use_relative_position_embeddings=True, out_features=[f"stage{depth}"],
        drop_path_rate=0.0,
    )  # fmt: skip
    return randomize(transformers.VitDetBackbone(config), seed=11).eval()


def from_hugging_face(state: dict) -> dict:
    """VitDetBackbone's names (``embeddings.projection``, ``encoder.layer.N.attention.qkv``) to
    the MAE encoder's, which ViTPyramid uses."""
    renamed = {}
    for key, value in state.items():
        key = key.replace("embeddings.projection.", "patch_embed.proj.")
        key = key.replace("embeddings.position_embeddings", "pos_embed")
        key = key.replace("encoder.layer.", "blocks.").replace(".attention.", ".attn.")
        renamed[key] = value
    return renamed


@pytest.mark.parametrize(
    "sizes",
    [[(1024, 1024)], [(448, 700), (512, 600)]],
    ids=["1024x1024", "non-square-padded-batch"],
)
def test_vit_trunk_equals_hugging_face_vitdet(sizes):
    # Two blocks: one in 14 x 14 windows, one global, both with relative positions (random,
    # so they count). The images of a batch are zero-padded to the largest, as the data
    # modules pad them; a side that is not a multiple of 16 is padded up to one, as detectron2
    # pads to its size divisibility (Hugging Face expects it done: it floors).
    peer = hugging_face_vitdet(depth=2, global_blocks=(1,))
    ours = ViTPyramid("base", depth=2, global_blocks=(1,), drop_path=0.0).eval()
    missing, unexpected = ours.load_state_dict(from_hugging_face(peer.state_dict()), strict=False)
    assert not unexpected and all(key.startswith("pyramid.") for key in missing)
    generator = torch.Generator().manual_seed(3)
    height, width = max(h for h, _ in sizes), max(w for _, w in sizes)
    images = torch.zeros(len(sizes), 3, height, width)
    for index, (h, w) in enumerate(sizes):
        images[index, :, :h, :w] = torch.randn(3, h, w, generator=generator)
    padded = F.pad(images, (0, (-width) % 16, 0, (-height) % 16))
    with torch.no_grad():
        mine = ours.forward_trunk(images)
        theirs = peer(padded).feature_maps[-1]
    assert mine.shape == theirs.shape == (len(sizes), 768, math.ceil(height / 16),
                                          math.ceil(width / 16))  # fmt: skip
    assert relative_error(mine, theirs) < 1e-4


@torch.no_grad()
def test_simple_feature_pyramid_is_the_papers():
    # ViTDet, section 3: from the last stride-16 map, stride 4 = two 2x2 stride-2 transposed
    # convolutions (LayerNorm and GELU between), stride 8 = one, stride 16 = the map, stride
    # 32 = 2x2 max-pooling; each then a 1x1 and a 3x3 convolution, each followed by LayerNorm
    # over channels, to 256 channels.
    backbone = randomize(ViTPyramid("tiny", depth=1), seed=5).eval()
    features = torch.randn(2, 192, 5, 7, generator=torch.Generator().manual_seed(6))

    def channel_norm(x, norm):
        return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), norm.weight, norm.bias,
                            norm.eps).permute(0, 3, 1, 2)  # fmt: skip

    def up(x, conv):
        return F.conv_transpose2d(x, conv.weight, conv.bias, stride=2)

    expected = []
    for stride, level in zip((4, 8, 16, 32), backbone.pyramid):
        ops = list(level.rescale)
        if stride == 4:
            x = up(F.gelu(channel_norm(up(features, ops[0]), ops[1])), ops[3])
        elif stride == 8:
            x = up(features, ops[0])
        elif stride == 16:
            x = features
        else:
            x = F.max_pool2d(features, 2, 2)
        conv1, norm1, conv3, norm3 = level.project
        x = channel_norm(F.conv2d(x, conv1.weight), norm1)
        expected.append(channel_norm(F.conv2d(x, conv3.weight, padding=1), norm3))
    with torch.no_grad():
        produced = [level(features) for level in backbone.pyramid]
    for stride, mine, theirs in zip((4, 8, 16, 32), produced, expected):
        assert mine.shape == (2, 256, 5 * 16 // stride, 7 * 16 // stride)
        assert relative_error(mine, theirs) < 1e-5, stride


def test_mae_repository_vit_base_file_loads_into_vit_base_backbone(tmp_path, capfd):
    # mae_pretrain_vit_base.pth at its real size and key list ({"model": ...}: the encoder,
    # the class token, the decoder), each tensor a constant of its own (stored as one
    # element) so that each key's destination shows.
    with torch.device("meta"):
        tree, _ = original_mae(224, 16, 768, 12, 12, 512, 8, 16)
    keys = list(tree.state_dict().items())
    state = {k: torch.full((), float(i)).expand(v.shape) for i, (k, v) in enumerate(keys)}
    torch.save({"model": state}, tmp_path / "mae_pretrain_vit_base.pth")
    network = Mask2Former(
        3, backbone="vit_base", backbone_checkpoint=str(tmp_path / "mae_pretrain_vit_base.pth")
    )
    assert (
        "starts from a ViT-base encoder (width 768, 12 blocks, patch 16)" in capfd.readouterr().err
    )
    trunk = network.backbone.body
    loaded = trunk.state_dict()
    for key in trunk.trunk_names():
        if "rel_pos" in key:  # not in MAE files: ViTDet starts them at zero
            assert not loaded[key].any(), key
        else:
            assert torch.equal(loaded[key], state[key].expand(loaded[key].shape)), key


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = randomize(ViTPyramid("tiny", depth=2, window_size=4, drop_path=0.0), seed=2)
    recomputed = ViTPyramid("tiny", depth=2, window_size=4, drop_path=0.0,
                            grad_checkpointing=True)  # fmt: skip
    recomputed.load_state_dict(plain.state_dict())
    images = torch.randn(2, 3, 80, 112, generator=torch.Generator().manual_seed(1))
    for network in (plain, recomputed):
        sum(level.square().mean() for level in network(images)).backward()
    for (name, a), b in zip(plain.named_parameters(), recomputed.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_layer_decay_groups_are_vitdets():
    # ViTDet: lr x decay ** (num_blocks + 1 - layer), layer 0 = patch and position embeddings,
    # i + 1 = block i; the pyramid and the detector's own layers at the full rate; the position
    # table, norms and biases without weight decay.
    from vistra.models import DETR
    from vistra.tasks.optim import dense_parameter_groups

    detr = DETR(3, backbone="vit_tiny", backbone_stage=3, backbone_options=dict(depth=4),
                hidden_dim=32, num_encoder_layers=1, num_decoder_layers=1, ffn_dim=64,
                num_queries=4)  # fmt: skip
    groups = dense_parameter_groups(detr, lr=1e-3, backbone_lr=1e-4, layer_decay=0.5)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    decayed = {id(p): g.get("weight_decay") != 0.0 for g in groups for p in g["params"]}
    named = dict(detr.named_parameters())
    assert lr_of[id(named["backbone.pos_embed"])] == pytest.approx(1e-4 * 0.5**5)
    assert not decayed[id(named["backbone.pos_embed"])]
    assert lr_of[id(named["backbone.patch_embed.proj.weight"])] == pytest.approx(1e-4 * 0.5**5)
    for block in range(4):
        weight = named[f"backbone.blocks.{block}.attn.qkv.weight"]
        assert lr_of[id(weight)] == pytest.approx(1e-4 * 0.5 ** (4 - block))
        assert decayed[id(weight)]
        assert not decayed[id(named[f"backbone.blocks.{block}.norm1.weight"])]
    assert lr_of[id(named["backbone.pyramid.0.project.0.weight"])] == 1e-3
    assert lr_of[id(named["class_embed.weight"])] == 1e-3
    assert len(lr_of) == sum(p.requires_grad for p in detr.parameters())
