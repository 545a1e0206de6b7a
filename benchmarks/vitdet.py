"""ViTDet's plain-ViT trunk: vistra's ``ViTPyramid`` against Hugging Face's ``VitDetBackbone``.

The same random weights in both (ViT-B width and heads, 14 x 14 windows, global attention in
every third block as ViT-B's 2, 5, 8, 11, decomposed relative positions, a 224-pixel position
table resized to the input), a 1024 x 1024 image, batch 1, float32: forward + backward of the
last map's sum, the two sides taking turns; the ratio is the median of the per-round ratios.
The outputs are checked equal first. vistra's attention runs through PyTorch's fused
``scaled_dot_product_attention`` (the relative positions as its additive mask); Hugging Face's
computes the attention matrix explicitly.

Run: .venv/bin/python benchmarks/vitdet.py [--depth 12] [--rounds 3] [--size 1024]
(ViT-B's 12 blocks: about 6 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).parent))
from common import interleaved_seconds, median, round_ratios, table  # noqa: E402

from vistra.models.vit_pyramid import ViTPyramid  # noqa: E402


def build(depth: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    global_blocks = tuple(i for i in range(depth) if i % 3 == 2)
    ours = ViTPyramid("base", depth=depth, global_blocks=global_blocks, drop_path=0.0)
    config = transformers.VitDetConfig(
        hidden_size=768, num_hidden_layers=depth, num_attention_heads=12, image_size=1024,
        pretrain_image_size=224, patch_size=16, window_size=14, drop_path_rate=0.0,
        window_block_indices=[i for i in range(depth) if i not in global_blocks],
        use_relative_position_embeddings=True, out_features=[f"stage{depth}"],
    )  # fmt: skip
    peer = transformers.VitDetBackbone(config)
    with torch.no_grad():
        for name, tensor in ours.named_parameters():
            if "rel_pos" in name:
                tensor.normal_(std=0.02)
    renamed = {}
    for key, value in ours.state_dict().items():
        if key.startswith("pyramid."):
            continue
        key = key.replace("patch_embed.proj.", "embeddings.projection.")
        key = key.replace("pos_embed", "embeddings.position_embeddings")
        renamed[key.replace("blocks.", "encoder.layer.").replace(".attn.", ".attention.")] = value
    peer.load_state_dict(renamed)
    return ours.train(), peer.train()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=1024)
    options = parser.parse_args()
    torch.manual_seed(0)
    ours, peer = build(options.depth)
    images = torch.randn(1, 3, options.size, options.size)
    with torch.no_grad():
        mine, theirs = ours.forward_trunk(images), peer(images).feature_maps[-1]
    error = float((mine - theirs).abs().max() / theirs.abs().max())
    print(f"outputs: max relative difference {error:.1e}")

    def step(forward):
        def run():
            forward(images).sum().backward()

        return run

    times = interleaved_seconds(
        {"vistra": step(ours.forward_trunk),
         "hugging_face": step(lambda x: peer(x).feature_maps[-1])},
        warmup=1, repeat=options.rounds,
    )  # fmt: skip
    ratio, spread = round_ratios(times["hugging_face"], times["vistra"])
    print(table(
        ["ViT-B trunk, forward + backward", "vistra s", "Hugging Face s", "HF / vistra", "range"],
        [[f"{options.size}x{options.size}, {options.depth} blocks, batch 1, float32",
          f"{median(times['vistra']):.1f}", f"{median(times['hugging_face']):.1f}", ratio,
          spread]],
    ))  # fmt: skip


if __name__ == "__main__":
    main()
