"""COCO instance and panoptic sets in shards (``vistra data shard FILE.json --images DIR``):
the same samples as from the folders, read by the same data modules, and the shards are plain
tars of the original files (read back with ``tarfile`` alone)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch
from command import shapes_data_args
from runner import Ran, run_vistra
from test_cluster import ONE_PROCESS, lines, vistra

from vistra.data.shapes import write_shapes
from vistra.data.sources import COCODetectionSource
from vistra.data.sources.coco_panoptic import COCOPanopticSource

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def shard(*args) -> Ran:
    return run_vistra("data", "shard", *args, cwd=Path.cwd())


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> tuple[Path, Path]:
    """(shapes folder, its shards: out/<split>/{instances,panoptic}) with 3 files a shard."""
    root = tmp_path_factory.mktemp("annotated_shards")
    data = root / "shapes"
    write_shapes(data, 7, 5, 64, seed=5)
    for split in ("train", "val"):
        for kind in ("instances", "panoptic"):
            done = shard(data / f"annotations/{kind}_{split}.json", root / "out" / split / kind,
                         "--images", data / f"images/{split}", "--shard-size", 3)  # fmt: skip
            assert done.returncode == 0, done.stderr
    return data, root / "out"


def assert_same_samples(a, b) -> None:
    assert len(a) == len(b)
    for index in range(len(a)):
        (image_a, target_a), (image_b, target_b) = a[index], b[index]
        assert torch.equal(image_a, image_b)
        assert target_a.keys() == target_b.keys()
        for key, value in target_a.items():
            same = torch.equal(value, target_b[key]) if torch.is_tensor(value) else (
                value == target_b[key])  # fmt: skip
            assert same, key


def test_instance_shards_give_the_folders_samples(sets):
    data, out = sets
    folder = COCODetectionSource(data / "annotations/instances_train.json",
                                 data / "images/train", with_masks=True)  # fmt: skip
    sharded = COCODetectionSource(out / "train/instances/instances_train.json",
                                  out / "train/instances/images", with_masks=True)  # fmt: skip
    assert_same_samples(folder, sharded)
    assert [sharded.item_name(i) for i in range(len(sharded))] == [
        folder.item_name(i) for i in range(len(folder))]  # fmt: skip


def test_panoptic_shards_give_the_folders_samples_and_ground_truth(sets):
    data, out = sets
    folder = COCOPanopticSource(data / "annotations/panoptic_val.json", data / "images/val")
    sharded = COCOPanopticSource(out / "val/panoptic/panoptic_val.json",
                                 out / "val/panoptic/images")  # fmt: skip
    assert_same_samples(folder, sharded)
    for index in range(len(folder)):
        (ids_a, segments_a), (ids_b, segments_b) = folder.ground_truth(index), sharded.ground_truth(
            index)  # fmt: skip
        assert (ids_a == ids_b).all() and segments_a == segments_b


def test_shards_are_plain_tars_of_the_original_files(sets):
    data, out = sets
    listed = json.loads((data / "annotations/instances_val.json").read_text())["images"]
    names = {image["file_name"] for image in listed}
    found = {}
    for tar in sorted((out / "val/instances/images").glob("*.tar")):
        with tarfile.open(tar) as archive:
            assert len(archive.getmembers()) <= 3
            found |= {m.name: archive.extractfile(m).read() for m in archive.getmembers()}
    assert found.keys() == names
    for name, content in found.items():
        assert content == (data / "images/val" / name).read_bytes()


def test_detr_trains_and_validates_on_shards_with_the_folders_numbers(sets, tmp_path):
    data, out = sets
    config = CONFIGS / "detr/shapes.yaml"
    sharded = [f"--data.init_args.{split}_{role}={out / split / 'instances' / name}"
               for split in ("train", "val")
               for role, name in (("annotations", f"instances_{split}.json"),
                                  ("images", "images"))]  # fmt: skip
    vistra("fit", "--config", config, *sharded, "--data.init_args.batch_size=2",
           "--trainer.max_steps=2", "--trainer.limit_val_batches=0", *ONE_PROCESS,
           cwd=tmp_path)  # fmt: skip
    (checkpoint,) = tmp_path.rglob("last.ckpt")
    on_shards = vistra("validate", "--config", config, *sharded, "--ckpt_path", checkpoint,
                       *ONE_PROCESS, cwd=tmp_path)  # fmt: skip
    on_folder = vistra("validate", "--config", config, *shapes_data_args(data, "instances"),
                       "--ckpt_path", checkpoint, *ONE_PROCESS, cwd=tmp_path)  # fmt: skip
    assert lines(on_shards, ("Average",)) == lines(on_folder, ("Average",))


def test_a_missing_image_is_named_with_its_field(tmp_path):
    write_shapes(tmp_path / "s", 2, 1, 32, seed=0)
    next((tmp_path / "s/images/train").iterdir()).unlink()
    done = shard(tmp_path / "s/annotations/instances_train.json", tmp_path / "out", "--images",
                 tmp_path / "s/images/train")  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "images[].file_name" in done.stderr and "not found" in done.stderr
