"""``backbone_checkpoint``: every kind of file that holds an encoder loads into DETR's and
Mask2Former's backbone weight for weight; the others stop ``vistra fit`` before training with
one line naming the file, what it holds and the backbone."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torchvision
import transformers
from command import shapes_data_args
from families import CONFIGS, NETWORK
from original_layouts import original_mae
from runner import run_vistra

from vistra.models import DETR, Mask2Former

ONE_STEP = ["--trainer.max_steps=1", "--trainer.limit_val_batches=0",
            "--trainer.enable_progress_bar=false"]  # fmt: skip
# The shared MAE run's encoder (configs/mae/vit_tiny_digits.yaml): ViT-tiny, 4 blocks, 8-pixel
# patches learnt on 32-pixel images.
TINY_VIT = dict(depth=4, patch_size=8, pretrain_image_size=32, window_size=4, image_size=64)
SMALL_HEAD = dict(hidden_dim=32, num_encoder_layers=1, num_decoder_layers=1, ffn_dim=64,
                  num_queries=4)  # fmt: skip
SMALL_MASKS = dict(dim=32, mask_dim=32, pixel_decoder_layers=1, pixel_ffn_dim=64,
                   decoder_layers=2, ffn_dim=64, heads=4, num_queries=4)  # fmt: skip


@pytest.fixture(scope="module")
def runs(trained, family_data, tmp_path_factory) -> dict[str, Path]:
    """``last.ckpt`` of each vistra run that holds an encoder: SupCon and MAE pre-training
    (the session's), and one step of a linear probe on the SupCon run, of MAE fine-tuning on
    the MAE run, of the box-map stage, and of SupCon with the CIFAR stem."""
    folder = tmp_path_factory.mktemp("encoder_runs")

    def fit(name: str, config: str, *args: str) -> Path:
        (folder / name).mkdir()
        done = run_vistra("fit", "--config", CONFIGS / config, *args, *ONE_STEP, cwd=folder / name)
        assert done.returncode == 0, done.stderr[-3000:]
        (checkpoint,) = (folder / name).rglob("last.ckpt")
        return checkpoint

    supcon, mae = trained("supcon"), trained("mae")
    shapes = shapes_data_args(family_data / "shapes", "instances")
    return {
        "supcon": supcon,
        "mae": mae,
        "probe": fit("probe", "supcon/linear_digits.yaml",
                     f"--model.init_args.checkpoint={supcon}"),
        "finetune": fit("finetune", "mae/finetune_digits.yaml", f"{NETWORK}checkpoint={mae}"),
        "box_map": fit("box_map", "detr/shapes_backbone.yaml", *shapes),
        "supcon_cifar_stem": fit("cifar", "supcon/resnet18_digits.yaml",
                                 f"{NETWORK}small_input=true"),
    }  # fmt: skip


def under(state: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def assert_backbone_is(backbone_state: dict, source: dict, keys) -> None:
    keys = [k for k in keys if not k.endswith("num_batches_tracked")]
    assert keys
    for key in keys:
        assert torch.equal(backbone_state[key], source[key]), key


# -- CNN encoders ------------------------------------------------------------------------------


def cnn_source(kind: str, runs: dict, folder: Path) -> tuple[str, dict]:
    """(file, its encoder in timm names) for each kind of CNN file."""
    if kind in ("supcon", "probe"):
        state = torch.load(runs[kind], weights_only=True)["state_dict"]
        return str(runs[kind]), under(state, "network.encoder.")
    if kind == "box_map":
        state = torch.load(runs[kind], weights_only=True)["state_dict"]
        return str(runs[kind]), under(state, "backbone.")
    if kind == "timm":
        state = timm.create_model("resnet18", num_classes=10).state_dict()
    else:
        state = torchvision.models.resnet18(num_classes=10).state_dict()
    path = folder / f"{kind}_resnet18.pth"
    torch.save(state, path)
    return str(path), state


@pytest.mark.parametrize("kind", ["supcon", "probe", "timm", "torchvision"])
def test_resnet_encoders_load_into_detr_and_mask2former(kind, runs, tmp_path):
    path, source = cnn_source(kind, runs, tmp_path)
    detr = DETR(3, backbone="resnet18", backbone_checkpoint=path, **SMALL_HEAD)
    assert_backbone_is(detr.backbone.state_dict(), source, detr.backbone.state_dict())
    m2f = Mask2Former(3, backbone="resnet18", backbone_checkpoint=path, **SMALL_MASKS)
    body = m2f.backbone.body.state_dict()
    assert_backbone_is(body, source, body)
    assert any(k.startswith("layer4.") for k in body)  # every stage, not a prefix of them


def test_box_map_stage_loads_into_detr_at_its_stage(runs, tmp_path):
    path, source = cnn_source("box_map", runs, tmp_path)
    detr = DETR(3, backbone="lcnet_050", backbone_stage=2, frozen_batchnorm=False,
                backbone_checkpoint=path, **SMALL_HEAD)  # fmt: skip
    assert_backbone_is(detr.backbone.state_dict(), source, detr.backbone.state_dict())


# -- ViT encoders ------------------------------------------------------------------------------


def hugging_face_mae(folder: Path) -> tuple[Path, dict]:
    """A Hugging Face ViTMAE (save_pretrained: model.safetensors) of the shared MAE's size, and
    its encoder in the MAE repository's names, renamed here from Hugging Face's module layout
    (query, key and value stacked into one qkv)."""
    config = transformers.ViTMAEConfig(
        hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768,
        image_size=32, patch_size=8, decoder_hidden_size=64, decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2, decoder_intermediate_size=128,
    )  # fmt: skip
    model = transformers.ViTMAEForPreTraining(config)
    model.save_pretrained(folder / "hf_mae")
    state = model.state_dict()
    source = {"patch_embed.proj.weight": state["vit.embeddings.patch_embeddings.projection.weight"],
              "patch_embed.proj.bias": state["vit.embeddings.patch_embeddings.projection.bias"],
              "pos_embed": state["vit.embeddings.position_embeddings"]}  # fmt: skip
    for i in range(4):
        block = under(state, f"vit.layers.{i}.")
        for part in ("weight", "bias"):
            source[f"blocks.{i}.attn.qkv.{part}"] = torch.cat(
                [block[f"attention.{n}_proj.{part}"] for n in "qkv"]
            )
            source[f"blocks.{i}.attn.proj.{part}"] = block[f"attention.o_proj.{part}"]
            source[f"blocks.{i}.norm1.{part}"] = block[f"layernorm_before.{part}"]
            source[f"blocks.{i}.norm2.{part}"] = block[f"layernorm_after.{part}"]
            for fc in ("fc1", "fc2"):
                source[f"blocks.{i}.mlp.{fc}.{part}"] = block[f"mlp.{fc}.{part}"]
    return folder / "hf_mae" / "model.safetensors", source


def vit_source(kind: str, runs: dict, folder: Path) -> tuple[str, dict]:
    if kind == "mae":
        return str(runs[kind]), under(torch.load(runs[kind], weights_only=True)["state_dict"],
                                      "network.")  # fmt: skip
    if kind == "finetune":
        return str(runs[kind]), under(torch.load(runs[kind], weights_only=True)["state_dict"],
                                      "network.vit.")  # fmt: skip
    if kind == "mae_repository":
        tree, _ = original_mae(32, 8, 192, 4, 3, 64, 1, 2)
        torch.save({"model": tree.state_dict()}, folder / "mae_pretrain.pth")
        return str(folder / "mae_pretrain.pth"), tree.state_dict()
    path, source = hugging_face_mae(folder)
    return str(path), source


@pytest.mark.parametrize("kind", ["mae", "finetune", "mae_repository", "hugging_face"])
def test_vit_encoders_load_into_detr_and_mask2former(kind, runs, tmp_path):
    path, source = vit_source(kind, runs, tmp_path)
    detr = DETR(3, backbone="vit_tiny", backbone_stage=3, backbone_checkpoint=path,
                backbone_options=TINY_VIT, **SMALL_HEAD)  # fmt: skip
    m2f = Mask2Former(3, backbone="vit_tiny", backbone_checkpoint=path,
                      backbone_options=TINY_VIT, **SMALL_MASKS)  # fmt: skip
    for trunk in (detr.backbone, m2f.backbone.body):
        state = trunk.state_dict()
        compared = [k for k in trunk.trunk_names() if "rel_pos" not in k]
        assert_backbone_is(state, source, compared)
        assert not any(state[k].any() for k in trunk.trunk_names() if "rel_pos" in k)


# -- refused, through the command ------------------------------------------------------------


def refused_fit(family_data: Path, folder: Path, backbone: list[str], checkpoint) -> str:
    """``vistra fit`` of the DETR shapes config with this backbone and file: the one line it
    stops with, before any training."""
    folder.mkdir()
    done = run_vistra(
        "fit", "--config", CONFIGS / "detr/shapes.yaml",
        *shapes_data_args(family_data / "shapes", "instances"), *ONE_STEP, *backbone,
        f"{NETWORK}backbone_checkpoint={checkpoint}", cwd=folder,
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and lines, done.stderr[-2000:]
    assert not list(folder.rglob("*.ckpt"))
    return lines[-1]


def test_refused_backbone_files_stop_with_one_line(runs, trained, family_data, tmp_path):
    resnet18 = [f"{NETWORK}backbone=resnet18", f"{NETWORK}backbone_stage=4"]
    line = refused_fit(family_data, tmp_path / "a", resnet18, runs["supcon_cifar_stem"])
    assert str(runs["supcon_cifar_stem"]) in line
    assert "resnet18 encoder of a SupConModel with the CIFAR stem" in line
    assert "the backbone is resnet18" in line and "standard stem" in line

    head_only = tmp_path / "classifier.pth"
    torch.save({"fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}, head_only)
    line = refused_fit(family_data, tmp_path / "b", resnet18, head_only)
    assert f"{head_only}: holds CNN weights; the backbone is resnet18" in line
    assert "none of the backbone's weights" in line

    vit_small = [f"{NETWORK}backbone=vit_small", f"{NETWORK}backbone_stage=3",
                 f"{NETWORK}backbone_options={{depth: 4, patch_size: 8}}"]  # fmt: skip
    line = refused_fit(family_data, tmp_path / "c", vit_small, runs["mae"])
    assert "ViT-tiny encoder (width 192, 4 blocks, patch 8)" in line
    assert "the backbone is vit_small (width 384" in line and "another width" in line

    line = refused_fit(family_data, tmp_path / "d", resnet18, runs["mae"])
    assert "a plain ViT; the backbone is resnet18" in line

    line = refused_fit(family_data, tmp_path / "e", resnet18, trained("detr"))
    assert "holds a whole DETR, not an encoder" in line
