"""Tar shards: ``vistra data shard`` writes the WebDataset layout, ``ShardSource`` reads the
same images, labels and names as the folder, every image once per epoch across 2 ranks x 2
loader workers, an interrupted epoch resumes without repeats, and ``vistra fit`` trains on it."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from runner import run_vistra
from torch.utils.data import DataLoader, Dataset

from vistra.data import DigitsSource, ImageFolderSource, ShardSource
from vistra.data.sampling import EpochSampler, ResumableDataLoader

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PER_CLASS, CLASSES = 4, 4


def vistra(*args, cwd: Path) -> subprocess.CompletedProcess:
    return run_vistra(*args, cwd=cwd)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards") / "classes"
    counts = [0] * CLASSES
    for image, label in DigitsSource("train", image_size=32):
        if label < CLASSES and counts[label] < PER_CLASS:
            (root / f"digit{label}").mkdir(parents=True, exist_ok=True)
            image.save(root / f"digit{label}" / f"{counts[label]}.png")
            counts[label] += 1
    return root


@pytest.fixture(scope="module")
def shards(folder) -> Path:
    out = folder.parent / "shards"
    run = vistra("data", "shard", folder, out, "--shard-size", 5, cwd=folder.parent)
    assert run.returncode == 0, run.stderr[-2000:]
    return out


def test_shards_hold_the_folder_in_the_webdataset_layout(folder, shards):
    tars = sorted(shards.glob("*.tar"))
    assert [t.name for t in tars] == [f"shard-00000{i}.tar" for i in range(4)]  # 5+5+5+1
    with tarfile.open(tars[0]) as archive:
        names = archive.getnames()
    assert names[:3] == ["000000000.png", "000000000.cls", "000000000.json"]
    original, sharded = ImageFolderSource(folder), ShardSource(shards)
    assert sharded.classes == original.classes and sharded.labels == original.labels
    assert len(sharded) == PER_CLASS * CLASSES
    for index in range(len(original)):
        assert sharded.item_name(index) == original.item_name(index)
        assert np.array_equal(np.asarray(sharded[index][0]), np.asarray(original[index][0]))


def test_tars_without_an_index_are_scanned(folder, shards, tmp_path):
    for tar in shards.glob("*.tar"):
        (tmp_path / tar.name).write_bytes(tar.read_bytes())
    scanned, indexed = ShardSource(tmp_path), ShardSource(shards)
    assert scanned.labels == indexed.labels and len(scanned) == len(indexed)
    assert np.array_equal(np.asarray(scanned[7][0]), np.asarray(indexed[7][0]))


class Indexed(Dataset):
    """(index, pixel sum) of a source's image for an ``EpochSampler`` key."""

    def __init__(self, source) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key):
        _, index = key
        return index, int(np.asarray(self.source[index][0], dtype=np.int64).sum())


def test_every_image_once_per_epoch_over_2_ranks_and_2_workers(folder, shards):
    source, seen = ShardSource(shards), []
    for rank in (0, 1):
        sampler = EpochSampler(len(source), seed=3, num_replicas=2, rank=rank)
        sampler.set_epoch(1)
        loader = DataLoader(Indexed(source), sampler=sampler, batch_size=2, num_workers=2)
        seen += [(int(i), int(s)) for indices, sums in loader for i, s in zip(indices, sums)]
    assert sorted(index for index, _ in seen) == list(range(len(source)))
    original = ImageFolderSource(folder)
    for index, pixels in seen:  # read by the workers from the right bytes
        assert pixels == int(np.asarray(original[index][0], dtype=np.int64).sum())


def test_an_interrupted_epoch_resumes_without_repeats(shards):
    source = ShardSource(shards)

    def loader():
        sampler = EpochSampler(len(source), seed=3, num_replicas=2, rank=1)
        return ResumableDataLoader(Indexed(source), sampler=sampler, batch_size=2, num_workers=2)

    straight = [int(i) for indices, _ in loader() for i in indices]
    first = loader()
    done = []
    for batch, (indices, _) in enumerate(first):
        done += [int(i) for i in indices]
        if batch == 1:
            state = first.state_dict()
            break
    resumed = loader()
    resumed.load_state_dict(state)
    rest = [int(i) for indices, _ in resumed for i in indices]
    assert done + rest == straight and len(set(done + rest)) == len(straight)


def test_vistra_fit_trains_mae_on_shards(shards, tmp_path):
    train = json.dumps(
        {"class_path": "vistra.data.ShardSource", "init_args": {"root": str(shards)}}
    )
    run = vistra("fit", "--config", CONFIGS / "mae/vit_tiny_digits.yaml",
                 f"--data.init_args.train={train}", "--data.init_args.val=null",
                 "--data.init_args.knn_bank=false", "--data.init_args.batch_size=4",
                 "--trainer.max_steps=2", "--data.init_args.num_workers=2",
                 cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert list(tmp_path.rglob("last.ckpt"))


def test_bad_shard_input_is_one_line(tmp_path):
    run = vistra("data", "shard", tmp_path / "missing", tmp_path / "out", cwd=tmp_path)
    assert run.returncode == 2 and "missing" in run.stderr and "Traceback" not in run.stderr
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "index.json").write_text("{not json")
    with pytest.raises(ValueError, match="index.json: not a vistra shard index"):
        ShardSource(tmp_path / "broken")


def test_one_shard_format_for_image_folders_and_coco_sets(shards, tmp_path):
    """Issue 28: one format, one writer, one reader. ``vistra data shard`` of a class folder
    and of a COCO set write the same index format, read by the same ``ShardFolder``; an index
    of an earlier format, or one that points a member outside its folder, is refused in one
    line."""
    from vistra.data.shapes import write_shapes
    from vistra.data.shard_files import ShardFolder

    write_shapes(tmp_path / "shapes", train=3, val=1, size=32, seed=0)
    coco = tmp_path / "coco_shards"
    run = vistra("data", "shard", tmp_path / "shapes/annotations/instances_train.json",
                 "--images", tmp_path / "shapes/images/train", coco, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    formats = {json.loads((f / "index.json").read_text())["format"]
               for f in (shards, coco / "images")}  # fmt: skip
    assert formats == {"vistra-shards-2"}
    by_name = ShardFolder(coco / "images")
    first = json.loads((tmp_path / "shapes/annotations/instances_train.json").read_text())
    name = first["images"][0]["file_name"]
    assert by_name.read(name) == (tmp_path / "shapes/images/train" / name).read_bytes()
    samples = ShardFolder(shards)
    assert samples.read(samples.samples[0][0]) == (shards.parent / "classes" /
                                                   samples.samples[0][2]).read_bytes()  # fmt: skip
    for change, words in ((lambda d: d.update(format="vistra-shards-1"), "an earlier vistra"),
                          (lambda d: d["files"][name].__setitem__(0, "../x.tar"),
                           "is not a file of its folder")):  # fmt: skip
        index = json.loads((coco / "images/index.json").read_text())
        change(index)
        (tmp_path / "changed").mkdir(exist_ok=True)
        (tmp_path / "changed/index.json").write_text(json.dumps(index))
        with pytest.raises(ValueError, match=words):
            ShardFolder(tmp_path / "changed")
