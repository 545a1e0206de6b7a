"""Training-data throughput: images/s decoded and augmented from tar shards (``ShardSource``)
against the same images as files in class folders (``ImageFolderSource``), 1 and 2 loader
workers, the calls taking turns.

The images are 320 x 240 JPEGs (shapes scenes, quality 90) augmented with the classification
training transform at 224 (random resized crop, flip); an epoch over them is one call.

Run: .venv/bin/python benchmarks/data.py [--images 512]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from common import interleaved_seconds, median, round_ratios, table  # noqa: E402

from vistra.data import ImageFolderSource, ShardSource  # noqa: E402
from vistra.data.sampling import EpochSampler, SeededAugmentation  # noqa: E402
from vistra.data.shapes import render_scene  # noqa: E402
from vistra.data.shard_writer import write_shards  # noqa: E402
from vistra.data.transforms import classification_train_transform  # noqa: E402


def write_folder(root: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    for index in range(count):
        scene = render_scene(rng, 320, 3)["image"]
        folder = root / f"class{index % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scene).resize((320, 240)).save(folder / f"{index:05d}.jpg", quality=90)


def epoch(source, workers: int):
    dataset = SeededAugmentation(source, classification_train_transform(224), seed=0)
    loader = DataLoader(dataset, sampler=EpochSampler(len(source), seed=0), batch_size=32,
                        num_workers=workers, persistent_workers=False)  # fmt: skip
    return lambda: sum(len(labels) for _, labels in loader)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder, shards = Path(scratch) / "folder", Path(scratch) / "shards"
        write_folder(folder, options.images)
        write_shards(ImageFolderSource(folder), shards, shard_size=256)
        rows = []
        for workers in (1, 2):
            calls = {"folder": epoch(ImageFolderSource(folder), workers),
                     "shards": epoch(ShardSource(shards), workers)}  # fmt: skip
            times = interleaved_seconds(calls, repeat=options.rounds)
            ratio, spread = round_ratios(times["folder"], times["shards"])
            rows.append([str(workers), f"{options.images / median(times['folder']):.0f}",
                         f"{options.images / median(times['shards']):.0f}",
                         f"{ratio} ({spread})"])  # fmt: skip
            print(rows[-1], flush=True)
    print(table(["workers", "folder img/s", "shards img/s", "shards speed-up (rounds)"], rows))


if __name__ == "__main__":
    main()
