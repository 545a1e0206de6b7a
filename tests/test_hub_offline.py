"""Hugging Face model ids from the local cache, never the network (README "Start from published
weights").

The cache is built here in the layout the Hugging Face cache documents (``models--owner--name/``
with ``refs/main`` naming a commit, ``snapshots/<commit>/`` links into ``blobs/``), from
``save_pretrained`` files of small random models under the published names; the same folders
loaded by path are the reference.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from command import NET, SMALL
from deploy_files import write_scenes
from PIL import Image
from runner import run_vistra

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
SWIN = dict(model_type="swin", embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8],
            out_features=["stage1", "stage2", "stage3", "stage4"])  # fmt: skip


def add_to_cache(cache: Path, model_id: str, folder: Path) -> None:
    repo = cache / f"models--{model_id.replace('/', '--')}"
    commit = hashlib.sha1(model_id.encode()).hexdigest()
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs").mkdir()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        blob = hashlib.sha256(file.read_bytes()).hexdigest()
        (repo / "blobs" / blob).write_bytes(file.read_bytes())
        (snapshot / file.name).symlink_to(Path("../../blobs") / blob)


def save_models(root: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    names = {0: "cat", 1: "dog", 2: "bird"}
    size = {"shortest_edge": 96, "longest_edge": 160}
    detr = transformers.DetrConfig(
        use_timm_backbone=True, backbone="resnet18", use_pretrained_backbone=False, d_model=64,
        encoder_layers=1, decoder_layers=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
        encoder_attention_heads=4, decoder_attention_heads=4, num_queries=5, id2label=names,
    )  # fmt: skip
    transformers.DetrForObjectDetection(detr).save_pretrained(root / "detr")
    transformers.DetrImageProcessor(size=size).save_pretrained(root / "detr")
    m2f = transformers.Mask2FormerConfig(
        backbone_config=SWIN, feature_size=64, mask_feature_size=64, hidden_dim=64,
        encoder_layers=1, decoder_layers=3, encoder_feedforward_dim=96, dim_feedforward=128,
        num_attention_heads=8, num_queries=6, id2label=names,
    )  # fmt: skip
    transformers.Mask2FormerForUniversalSegmentation(m2f).save_pretrained(root / "m2f")
    processor = transformers.Mask2FormerImageProcessor(size=size, size_divisor=32)
    processor.save_pretrained(root / "m2f")
    mae = transformers.ViTMAEConfig(
        hidden_size=192, num_hidden_layers=2, num_attention_heads=3, intermediate_size=768,
        image_size=32, patch_size=16, decoder_hidden_size=64, decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2, decoder_intermediate_size=256,
    )  # fmt: skip
    transformers.ViTMAEForPreTraining(mae).save_pretrained(root / "mae")
    return {"facebook/detr-resnet-50": root / "detr",
            "facebook/mask2former-swin-tiny-coco-panoptic": root / "m2f",
            "facebook/vit-mae-base": root / "mae"}  # fmt: skip


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hub")
    folders = save_models(root / "saved")
    for model_id, folder in folders.items():
        add_to_cache(root / "cache", model_id, folder)
    return {"cache": root / "cache", **folders}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


def test_predict_by_model_id_equals_the_folder_by_path(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub["cache"]))
    photos = write_scenes(tmp_path / "photos", [(96, 120), (110, 80)])
    # The README's command, with the cache holding a small random model under that name.
    by_id = run_vistra("predict", "--ckpt", "facebook/detr-resnet-50", "--input", "photos/",
                       "--output", "detections/", cwd=tmp_path)  # fmt: skip
    assert by_id.returncode == 0, by_id.stderr[-2000:]
    by_path = run_vistra("predict", "--ckpt", hub["facebook/detr-resnet-50"], "--input", photos,
                         "--output", tmp_path / "by_path", cwd=tmp_path)  # fmt: skip
    assert by_path.returncode == 0, by_path.stderr[-2000:]
    assert _files(tmp_path / "detections") == _files(tmp_path / "by_path")
    detections = json.loads((tmp_path / "detections" / "detections.json").read_text())
    assert len(detections) == 10 and {d["category_id"] for d in detections} <= {0, 1, 2}

    from vistra import Predictor

    name = "facebook/mask2former-swin-tiny-coco-panoptic"
    by_id, by_path = Predictor.from_pretrained(name), Predictor.from_pretrained(hub[name])
    assert by_id.spec.names == ["cat", "dog", "bird"] and by_id.spec.preprocess.pad_multiple == 32
    image = Image.open(photos / "scene0.png")
    a, b = by_id(image), by_path(image)
    assert torch.equal(a.semantic, b.semantic) and a.semantic.shape == (96, 120)
    assert torch.equal(a.instances["masks"], b.instances["masks"])
    mae = Predictor.from_pretrained("facebook/vit-mae-base")
    same_files = Predictor.from_pretrained(hub["facebook/vit-mae-base"])
    assert torch.equal(mae.embed(image), same_files.embed(image))


def test_vitmae_fine_tuning_from_a_model_id_starts_from_its_weights(hub, tmp_path, monkeypatch):
    """The README's fine-tuning command with ``checkpoint=facebook/vit-mae-base`` trains the
    same weights as with the saved folder's file; shrunk to the README's smaller ViT (tiny,
    depth 2, 32 pixels) and one step."""
    monkeypatch.setenv("HF_HUB_CACHE", str(hub["cache"]))
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    for split in ("train", "val"):
        for label, name in enumerate(("cats", "dogs")):
            folder = tmp_path / "data/labelled" / split / name
            folder.mkdir(parents=True)
            for index in range(2):
                pixels = np.random.default_rng(10 * label + index).integers(0, 255, (32, 32, 3))
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{index}.png")
    shrink = ["--trainer.max_steps=1", "--trainer.limit_val_batches=1",
              "--data.init_args.num_workers=0", "--data.init_args.batch_size=2",
              "--data.init_args.image_size=32", f"{NET}image_size=32", *SMALL["vit"]]  # fmt: skip
    weights = {}
    file = hub["facebook/vit-mae-base"] / "model.safetensors"
    for source in ("facebook/vit-mae-base", file):
        run = run_vistra("fit", "--config", "configs/mae/custom_finetune.yaml",
                         f"{NET}checkpoint={source}", *shrink, cwd=tmp_path)  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        last = max((tmp_path / "vistra_runs").rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
        weights[str(source)] = torch.load(last, weights_only=True)["state_dict"]
    first, second = weights.values()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    # One step in the warm-up barely moves the file's weights (a random start is far from them).
    from safetensors.torch import load_file

    queries = load_file(file)["vit.encoder.layer.0.attention.attention.query.weight"]
    torch.testing.assert_close(first["network.vit.blocks.0.attn.qkv.weight"][:192], queries,
                               atol=1e-3, rtol=0)  # fmt: skip


def test_a_name_not_in_the_cache_stops_in_one_line(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub["cache"]))
    write_scenes(tmp_path / "photos", [(64, 64)])
    run = run_vistra("predict", "--ckpt", "facebook/detr-resnet-101", "--input", "photos",
                     "--output", "out", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    line = run.stderr.strip()
    assert len(line.splitlines()) == 1 and str(hub["cache"]) in line
    assert (
        "not in the Hugging Face cache" in line and "hf download facebook/detr-resnet-101" in line
    )
    assert not (tmp_path / "out").exists()


def test_a_config_asking_for_more_than_its_weights_is_refused_before_allocating(hub, tmp_path):
    """config.json is data: sizes it states are checked against the weight file's tensors on the
    meta device before the network is built (here: 8,192 wide, about 2.5 billion weights, over
    the file's few million)."""
    import shutil

    folder = tmp_path / "detr"
    shutil.copytree(hub["facebook/detr-resnet-50"], folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(d_model=8192, encoder_ffn_dim=32768, decoder_ffn_dim=32768)
    (folder / "config.json").write_text(json.dumps(config))
    write_scenes(tmp_path / "photos", [(64, 64)])
    run = run_vistra("predict", "--ckpt", folder, "--input", "photos", "--output", "out",
                     cwd=tmp_path)  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "asks for a network of" in run.stderr
    assert not (tmp_path / "out").exists()
