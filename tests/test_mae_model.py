"""MAE: masking invariants, loss on removed patches only, and parity with Hugging Face ViTMAE."""

import pytest
import torch

from vistra.convert import load_mae_weights, mae_state_dict_from_hf
from vistra.losses.mae import removed_patches
from vistra.models.mae import (
    PRESETS,
    MaskedAutoencoder,
    block_rows,
    patchify,
    random_masking,
    unpatchify,
)


def tiny(**overrides):
    options = dict(size="tiny", image_size=32, patch_size=8, decoder_width=64, decoder_depth=2,
                   decoder_heads=4)  # fmt: skip
    return MaskedAutoencoder(**{**options, **overrides})


def test_random_masking_invariants():
    tokens = torch.randn(4, 49, 8)
    visible, mask, ids_restore = random_masking(tokens, 0.75)
    keep = int(49 * 0.25)
    assert visible.shape == (4, keep, 8)
    assert (mask.sum(dim=1) == 49 - keep).all()
    # ids_restore is the inverse permutation of the shuffle: restoring the shuffled order gives
    # back the original tokens.
    ids_shuffle = ids_restore.argsort(dim=1)
    assert torch.equal(ids_shuffle.gather(1, ids_restore), torch.arange(49).expand(4, -1))
    for sample in range(4):
        kept_positions = ids_shuffle[sample, :keep]
        assert torch.equal(visible[sample], tokens[sample, kept_positions])
        removed = torch.ones(49)
        removed[kept_positions] = 0
        assert torch.equal(mask[sample], removed)
    assert not torch.equal(mask[0], mask[1])  # different per sample


def test_injected_noise_is_reproducible_and_lowest_noise_is_kept():
    tokens = torch.randn(2, 16, 4)
    noise = torch.rand(2, 16)
    first = random_masking(tokens, 0.5, noise)
    second = random_masking(tokens, 0.5, noise)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    kept = first[1] == 0
    assert (
        noise[kept].view(2, -1).max(dim=1).values < noise[~kept].view(2, -1).min(dim=1).values
    ).all()


def test_patchify_round_trip_and_order():
    images = torch.randn(2, 3, 32, 48)
    patches = patchify(images, 16)
    assert patches.shape == (2, 6, 16 * 16 * 3)
    # patch 1 is the second patch of the first row; its first value is pixel (0, 16), channel 0
    assert patches[0, 1, 0] == images[0, 0, 0, 16]
    assert torch.equal(unpatchify(patches, 16, (2, 3)), images)


def test_loss_counts_removed_patches_only():
    model = tiny(norm_pix_loss=False)
    images = torch.randn(2, 3, 32, 32)
    outputs = model(images)
    mask = outputs["mask"]
    target = patchify(images, 8)
    # Predicting the visible patches perfectly wrong changes nothing; removed ones do.
    spoiled_visible = torch.where(mask.bool()[..., None], target, target + 100.0)
    perfect_removed = model.loss(images, {"pred": spoiled_visible, "mask": mask})
    assert perfect_removed.item() == 0.0
    removed = removed_patches(mask)
    assert removed.shape == (2, 12) and bool(mask.gather(1, removed).all())
    per_patch = ((outputs["pred"] - target) ** 2).mean(-1)
    expected = per_patch[mask.bool()].mean()
    torch.testing.assert_close(model.loss(images, outputs), expected)


def test_block_rows_equals_the_block_at_those_rows():
    block = tiny().decoder_blocks[-1]
    hidden = torch.randn(3, 17, 64)
    rows = torch.stack([torch.randperm(17)[:5] for _ in range(3)])  # different rows per image
    expected = block(hidden).gather(1, rows[..., None].expand(-1, -1, 64))
    torch.testing.assert_close(block_rows(block, hidden, rows), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_pretraining_loss_equals_the_full_forward_loss_and_gradients(norm_pix_loss):
    torch.manual_seed(0)
    model = tiny(norm_pix_loss=norm_pix_loss, decoder_depth=3)
    images = torch.randn(2, 3, 32, 32)
    noise = torch.rand(2, 16)
    full = model.loss(images, model(images, noise=noise))
    full_gradients = torch.autograd.grad(full, list(model.parameters()))
    pruned = model.pretraining_loss(images, noise)
    pruned_gradients = torch.autograd.grad(pruned, list(model.parameters()))
    torch.testing.assert_close(pruned, full, rtol=1e-6, atol=0)
    for (name, _), ours, reference in zip(model.named_parameters(), pruned_gradients,
                                          full_gradients):  # fmt: skip
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-6, msg=name)


def test_features_without_masking_are_deterministic():
    model = tiny().eval()
    images = torch.randn(3, 3, 32, 32)
    features = model.forward_features(images)
    assert features.shape == (3, PRESETS["tiny"][0])
    assert torch.equal(features, model.forward_features(images))


def test_bad_configuration():
    with pytest.raises(ValueError, match="divisible"):
        tiny(image_size=30)
    with pytest.raises(ValueError, match="size must be"):
        tiny(size="gigantic")
    with pytest.raises(ValueError, match="mask_ratio"):
        tiny(mask_ratio=1.0)
    with pytest.raises(ValueError, match=r"image_size\), got \(1, 3, 30, 30\)"):
        tiny()(torch.randn(1, 3, 30, 30))


def test_patch_projection_of_visible_pixels_equals_the_convolution():
    model = tiny()
    images = torch.randn(2, 3, 32, 32)
    tokens = model.project_patches(patchify(images, model.patch_size))
    torch.testing.assert_close(tokens, model.patch_embed(images), rtol=1e-5, atol=1e-6)


def hf_pair(size, image_size, patch_size, decoder=(512, 8, 16)):
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    width, depth, heads = PRESETS[size]
    decoder_width, decoder_depth, decoder_heads = decoder
    config = ViTMAEConfig(
        hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads,
        intermediate_size=4 * width, hidden_act="gelu", layer_norm_eps=1e-6,
        image_size=image_size, patch_size=patch_size, qkv_bias=True,
        decoder_hidden_size=decoder_width, decoder_num_hidden_layers=decoder_depth,
        decoder_num_attention_heads=decoder_heads, decoder_intermediate_size=4 * decoder_width,
        mask_ratio=0.75, norm_pix_loss=True, attn_implementation="eager",
    )  # fmt: skip
    torch.manual_seed(0)
    peer = ViTMAEForPreTraining(config).eval()
    ours = MaskedAutoencoder(size, image_size, patch_size, decoder_width, decoder_depth,
                             decoder_heads).eval()  # fmt: skip
    ours.load_state_dict(mae_state_dict_from_hf(peer.state_dict()))
    return peer, ours


@pytest.mark.parametrize(
    "size, image_size, patch_size, decoder",
    [("tiny", 64, 16, (128, 2, 4)), ("base", 224, 16, (512, 8, 16))],
    ids=["tiny", "vit-b16-224"],
)
def test_parity_with_hugging_face(size, image_size, patch_size, decoder):
    peer, ours = hf_pair(size, image_size, patch_size, decoder)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, image_size, image_size, generator=generator)
    noise = torch.rand(2, (image_size // patch_size) ** 2, generator=generator)
    with torch.no_grad():
        expected = peer(pixel_values=images, noise=noise)
        outputs = ours(images, noise=noise)
        loss = ours.loss(images, outputs)
        training_loss = ours.pretraining_loss(images, noise)
    assert torch.equal(outputs["mask"], expected.mask)
    assert torch.equal(outputs["ids_restore"], expected.ids_restore)
    torch.testing.assert_close(outputs["pred"], expected.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, expected.loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(training_loss, expected.loss, rtol=1e-5, atol=0)


def test_load_hf_checkpoint_files(tmp_path):
    from safetensors.torch import save_file

    peer, _ = hf_pair("tiny", 32, 16, (64, 1, 4))
    save_file(peer.state_dict(), tmp_path / "model.safetensors")
    torch.save(peer.vit.state_dict(), tmp_path / "pytorch_model.bin")  # ViTMAEModel layout
    ours = MaskedAutoencoder("tiny", 32, 16, 64, 1, 4)
    load_mae_weights(ours, tmp_path / "model.safetensors")
    torch.testing.assert_close(ours.cls_token, peer.vit.embeddings.cls_token)
    encoder_only = MaskedAutoencoder("tiny", 32, 16, 64, 1, 4)
    load_mae_weights(encoder_only, tmp_path / "pytorch_model.bin", encoder_only=True)
    torch.testing.assert_close(
        encoder_only.blocks[0].attn.qkv.weight, ours.blocks[0].attn.qkv.weight
    )
    with pytest.raises(ValueError, match="missing"):
        load_mae_weights(
            MaskedAutoencoder("tiny", 32, 16, 64, 1, 4), tmp_path / "pytorch_model.bin"
        )
    with pytest.raises(ValueError, match="wrong shape"):
        load_mae_weights(
            MaskedAutoencoder("small", 32, 16, 64, 1, 4), tmp_path / "model.safetensors"
        )


def test_no_weight_decay_on_tokens_norms_and_biases():
    from vistra.tasks.optim import build_optimizer

    model = tiny()
    optimizer = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95))
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {
        names[id(p)] for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]
    }
    assert "cls_token" not in decayed and "mask_token" not in decayed
    assert not any(n.endswith(".bias") or "norm" in n for n in decayed)
    assert "blocks.0.attn.qkv.weight" in decayed and "decoder_pred.weight" in decayed
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.95)


def test_layer_decay_scales_each_block():
    from vistra.tasks.optim import build_optimizer

    model = tiny()
    depth = PRESETS["tiny"][1]
    optimizer = build_optimizer(model, "adamw", lr=1.0, weight_decay=0.05, layer_decay=0.65)
    lr_of = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for param in group["params"]:
            lr_of[names[id(param)]] = group["lr"]
    # MAE fine-tuning (BEiT-style): embeddings decay^(depth+1), block i decay^(depth-i), rest 1.
    assert lr_of["patch_embed.proj.weight"] == pytest.approx(0.65 ** (depth + 1))
    assert lr_of["cls_token"] == pytest.approx(0.65 ** (depth + 1))
    for block in range(depth):
        assert lr_of[f"blocks.{block}.attn.qkv.weight"] == pytest.approx(0.65 ** (depth - block))
        assert lr_of[f"blocks.{block}.norm1.bias"] == pytest.approx(0.65 ** (depth - block))
    assert lr_of["norm.weight"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="layer_decay"):
        build_optimizer(model, "adamw", lr=1.0, weight_decay=0.05, layer_decay=1.5)
