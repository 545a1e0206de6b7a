"""Image sources: each format loads, and bad input gets a message naming the file and line."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from vistra.data import (
    CIFARSource,
    ContrastiveDataModule,
    DigitsSource,
    ImageFolderSource,
    ImageLoadError,
    ListFileSource,
)


def write_image(path, colour=(200, 10, 10), size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def test_digits_split_is_fixed_stratified_and_disjoint():
    train, val = DigitsSource("train"), DigitsSource("val")
    assert (len(train), len(val)) == (1437, 360)
    assert np.bincount(val.labels).min() >= 35  # every class held out in proportion
    image, label = train[0]
    assert image.size == (32, 32) and image.mode == "RGB" and 0 <= label < 10
    train_pixels = {item.tobytes() for item in train.items}
    assert not any(item.tobytes() in train_pixels for item in val.items)
    assert [i.tobytes() for i in DigitsSource("val").items] == [i.tobytes() for i in val.items]


def test_image_folder_classes_and_labels(tmp_path):
    write_image(tmp_path / "cat" / "a.png")
    write_image(tmp_path / "cat" / "b.jpg")
    write_image(tmp_path / "dog" / "c.png")
    source = ImageFolderSource(tmp_path)
    assert source.classes == ["cat", "dog"]
    assert sorted(source.labels) == [0, 0, 1]
    assert source[0][0].size == (12, 10)


def test_corrupt_image_error_names_the_file(tmp_path):
    write_image(tmp_path / "cat" / "good.png")
    bad = tmp_path / "cat" / "broken.png"
    bad.write_bytes(b"not a png at all")
    source = ImageFolderSource(tmp_path)
    index = [str(p) for p in source.items].index(str(bad))
    with pytest.raises(ImageLoadError, match="broken.png"):
        source[index]


def test_skip_bad_images_warns_once_with_a_count(tmp_path):
    write_image(tmp_path / "cat" / "good.png")
    for name in ("x.png", "y.jpg"):
        (tmp_path / "cat" / name).write_bytes(b"\x89PNG garbage")
    with pytest.warns(UserWarning, match="skipped 2 unreadable image"):
        source = ImageFolderSource(tmp_path, skip_bad_images=True)
    assert len(source) == 1


def test_empty_or_missing_folder(tmp_path):
    (tmp_path / "cat").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        ImageFolderSource(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolderSource(tmp_path / "nowhere")


def test_list_file_with_and_without_labels(tmp_path):
    write_image(tmp_path / "imgs" / "a.png")
    write_image(tmp_path / "imgs" / "b.png")
    (tmp_path / "train.txt").write_text("# EasyCV style\nimgs/a.png 2\n\nimgs/b.png 0\n")
    source = ListFileSource(tmp_path / "train.txt")
    assert source.labels == [2, 0] and source.num_classes == 3
    (tmp_path / "unlabelled.txt").write_text("imgs/a.png\nimgs/b.png\n")
    assert ListFileSource(tmp_path / "unlabelled.txt").labels == [-1, -1]


def test_list_file_missing_image_names_the_line(tmp_path):
    write_image(tmp_path / "a.png")
    (tmp_path / "list.txt").write_text("a.png 0\nmissing.png 1\n")
    with pytest.raises(FileNotFoundError, match=r"list.txt:2: image .*missing.png"):
        ListFileSource(tmp_path / "list.txt")
    (tmp_path / "bad_label.txt").write_text("a.png zero\n")
    with pytest.raises(ValueError, match="bad_label.txt:1: label must be an integer"):
        ListFileSource(tmp_path / "bad_label.txt")


def test_cifar_never_downloads_and_says_where_to_put_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        CIFARSource(tmp_path)


def test_cifar_reads_python_batches(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, _ in CIFAR10.train_list + CIFAR10.test_list:
        batch = {"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 9]}
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {"label_names": [f"c{i}" for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    # These generated batches do not have the real files' md5 sums; everything else is real.
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args: True)
    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    train = CIFARSource(tmp_path, split="train")
    assert len(train) == 20 and train.classes[9] == "c9"
    image, label = train[3]
    assert image.size == (32, 32) and label == 9


def test_contrastive_batches_are_seeded_per_sample_and_epoch():
    module = ContrastiveDataModule(DigitsSource("val"), batch_size=8, views=3)
    loader = module.train_dataloader()
    views, labels = next(iter(loader))
    assert views.shape == (8, 3, 3, 32, 32) and labels.shape == (8,)
    assert not torch.equal(views[:, 0], views[:, 1])  # the views differ
    again, _ = next(iter(module.train_dataloader()))
    torch.testing.assert_close(views, again, rtol=0, atol=0)  # same seed, same epoch: same batch
    loader.sampler.set_epoch(1)
    other, _ = next(iter(loader))
    assert not torch.equal(views, other)


def test_batch_larger_than_dataset_is_refused(tmp_path):
    write_image(tmp_path / "cat" / "a.png")
    module = ContrastiveDataModule(ImageFolderSource(tmp_path), batch_size=4)
    with pytest.raises(ValueError, match="fewer than one batch"):
        module.train_dataloader()


def test_unlabelled_folder_reads_every_image_at_any_depth(tmp_path):
    from PIL import Image

    from vistra.data import UnlabelledFolderSource

    for relative in ("a.png", "x/b.jpg", "x/y/z/c.png", "x/.hidden.png"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 6)).save(tmp_path / relative)
    (tmp_path / "x" / "notes.txt").write_text("not an image")
    source = UnlabelledFolderSource(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in source.items] == [
        "a.png", "x/b.jpg", "x/y/z/c.png"]  # fmt: skip
    assert source.classes == [] and source.labels == [-1] * 3
    image, label = source[2]
    assert image.size == (8, 6) and image.mode == "RGB" and label == -1
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no images found"):
        UnlabelledFolderSource(tmp_path / "empty")
