"""MAE fine-tuning: the classifier takes the pre-trained encoder, layer decay, partial tuning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from families import top1_by_hand

from vistra.cli import VistraCLI
from vistra.models import MaskedAutoencoder, ViTClassifier
from vistra.tasks.optim import build_optimizer

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "mae"


@pytest.fixture(scope="module")
def mae_file(tmp_path_factory) -> tuple[MaskedAutoencoder, Path]:
    torch.manual_seed(0)
    mae = MaskedAutoencoder("tiny", image_size=32, patch_size=8, decoder_depth=1)
    path = tmp_path_factory.mktemp("mae") / "mae_pretrain.pth"
    torch.save({"model": mae.state_dict()}, path)  # the MAE repository's layout
    return mae, path


def test_classifier_features_equal_the_pretrained_encoder(mae_file):
    mae, path = mae_file
    classifier = ViTClassifier(10, "tiny", 32, 8, global_pool="token", drop_path=0.0,
                               checkpoint=str(path)).eval()  # fmt: skip
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = mae.eval().forward_features(images, pool="cls")
        got = classifier.forward_features(images)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_layer_decay_scales_each_block(mae_file):
    classifier = ViTClassifier(10, "tiny", 32, 8)
    optimizer = build_optimizer(classifier, "adamw", 1.0, 0.05, layer_decay=0.5)
    scale_of = {}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            scale_of[id(parameter)] = group["lr"]
    names = dict(classifier.named_parameters())
    depth = len(classifier.vit.blocks)  # 12
    assert scale_of[id(names["vit.head.weight"])] == 1.0
    assert scale_of[id(names["vit.fc_norm.weight"])] == 1.0
    assert scale_of[id(names[f"vit.blocks.{depth - 1}.attn.qkv.weight"])] == 0.5
    assert scale_of[id(names["vit.blocks.0.mlp.fc1.weight"])] == 0.5**depth
    assert scale_of[id(names["vit.patch_embed.proj.weight"])] == 0.5 ** (depth + 1)
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decay[id(names["vit.cls_token"])] == 0.0 and decay[id(names["vit.head.weight"])] == 0.05


def test_partial_fine_tuning_trains_only_the_last_blocks():
    classifier = ViTClassifier(10, "tiny", 32, 8, trainable_blocks=2)
    trainable = {n for n, p in classifier.named_parameters() if p.requires_grad}
    assert any(n.startswith("vit.blocks.11.") for n in trainable)
    assert any(n.startswith("vit.blocks.10.") for n in trainable)
    assert not any(n.startswith(("vit.blocks.9.", "vit.patch_embed", "vit.cls_token"))
                   for n in trainable)  # fmt: skip
    assert {"vit.head.weight", "vit.fc_norm.weight"} <= trainable


def test_finetune_from_a_vistra_pretraining_checkpoint(mae_learning_run, tmp_path):
    tiny = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3",
            "--trainer.limit_val_batches=2", "--trainer.enable_progress_bar=false",
            "--data.init_args.batch_size=16"]  # fmt: skip
    checkpoint = mae_learning_run["checkpoint"]
    finetune = VistraCLI(args=["fit", "--config", str(CONFIGS / "finetune_digits.yaml"), *tiny,
                               "--model.init_args.network.init_args.checkpoint", checkpoint,
                               "--trainer.default_root_dir", str(tmp_path / "ft")])  # fmt: skip
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    encoder = {k.removeprefix("network."): v for k, v in state.items()}
    tuned = finetune.model.network.vit
    assert torch.isfinite(finetune.trainer.callback_metrics["train/loss"])
    # The logged top-1 is the accuracy of the tuned classifier's own predictions.
    logged = float(finetune.trainer.callback_metrics["val/top1"])
    assert logged == pytest.approx(top1_by_hand(finetune, batches=2), abs=1e-6)
    # Three steps moved the weights away from, but not far from, the pre-trained ones.
    difference = (tuned.blocks[0].attn.qkv.weight - encoder["blocks.0.attn.qkv.weight"]).abs()
    assert 0 < difference.max() < 0.05


def test_encoder_of_another_depth_is_refused(mae_file, tmp_path):
    _, twelve_blocks = mae_file
    with pytest.raises(ValueError, match="unexpected"):
        ViTClassifier(10, "tiny", 32, 8, depth=4, checkpoint=str(twelve_blocks))
    shallow = MaskedAutoencoder("tiny", image_size=32, patch_size=8, decoder_depth=1, depth=2)
    vistra_file = tmp_path / "shallow.ckpt"
    state = {f"network.{k}": v for k, v in shallow.state_dict().items()}
    record = {"class_path": "vistra.models.mae.MaskedAutoencoder", "init_args": shallow.config}
    torch.save({"vistra_network": record, "state_dict": state}, vistra_file)
    with pytest.raises(ValueError, match=r"depth differs\?.*missing \['blocks.10"):
        ViTClassifier(10, "tiny", 32, 8, checkpoint=str(vistra_file))
    assert (
        len(ViTClassifier(10, "tiny", 32, 8, depth=2, checkpoint=str(vistra_file)).vit.blocks) == 2
    )


def cubic_weights(t: float, a: float = -0.75) -> list[float]:
    """Keys' cubic convolution weights of the 4 neighbours at offsets -1, 0, 1, 2."""

    def kernel(x: float) -> float:
        x = abs(x)
        if x <= 1:
            return (a + 2) * x**3 - (a + 3) * x**2 + 1
        if x < 2:
            return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
        return 0.0

    return [kernel(t + 1), kernel(t), kernel(1 - t), kernel(2 - t)]


def bicubic_by_hand(grid, size: int):
    """[h, w, D] -> [size, size, D], half-pixel centres, edge pixels repeated, no antialias."""
    import numpy as np

    def along(array, axis: int):
        old = array.shape[axis]
        out = []
        for index in range(size):
            source = (index + 0.5) * old / size - 0.5
            base = int(np.floor(source))
            weights = cubic_weights(source - base)
            taps = [
                np.take(array, min(max(base + k, 0), old - 1), axis=axis) for k in (-1, 0, 1, 2)
            ]
            out.append(sum(w * tap for w, tap in zip(weights, taps)))
        return np.stack(out, axis=axis)

    return along(along(grid, 0), 1)


def test_position_embeddings_resized_like_a_hand_computed_bicubic():
    from vistra.models.vit_classifier import resize_position_embedding

    torch.manual_seed(0)
    old = torch.randn(1, 1 + 8 * 8, 5, dtype=torch.float64)
    new = resize_position_embedding(old, (12, 12))
    assert new.shape == (1, 1 + 12 * 12, 5)
    torch.testing.assert_close(new[:, 0], old[:, 0])  # the class token is kept
    expected = bicubic_by_hand(old[0, 1:].reshape(8, 8, 5).numpy(), 12).reshape(144, 5)
    # timm resizes in float32: float32 rounding is the only difference allowed
    torch.testing.assert_close(new[0, 1:], torch.from_numpy(expected), rtol=1e-5, atol=1e-5)


def test_finetune_a_64_pixel_mae_at_96_pixels_through_the_command(tmp_path):
    from runner import run_vistra

    torch.manual_seed(0)
    mae = MaskedAutoencoder("tiny", image_size=64, patch_size=8, decoder_depth=1, depth=4)
    mae_file = tmp_path / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": mae.state_dict()}, mae_file)  # the MAE repository's layout
    at_96 = [f"--{key}=96" for key in ("model.init_args.network.init_args.image_size",
                                       "data.init_args.image_size",
                                       "data.init_args.train.init_args.image_size",
                                       "data.init_args.val.init_args.image_size")]  # fmt: skip
    result = run_vistra("fit", "--config", CONFIGS / "finetune_digits.yaml", *at_96,
                        "--model.init_args.network.init_args.checkpoint", mae_file,
                        "--trainer.max_steps=2", "--trainer.limit_val_batches=1",
                        "--data.init_args.batch_size=16", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "64 patches resized bicubically to the 12 x 12 patch grid" in result.stdout
    last = next(tmp_path.rglob("last.ckpt"))
    state = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    assert state["network.vit.pos_embed"].shape == (1, 1 + 12 * 12, 192)
