"""A corpus of bad inputs, written by the test, each with the message (or the documented skip)
a user gets: the file and the field, in one line, never a traceback.

Four groups: COCO instance files through ``check_coco`` (which ``vistra data check`` prints and
the detection data refuses with); the other readers (panoptic, semantic, list files, image
folders, images); ``vistra predict`` on bad checkpoints, inputs and outputs; and ``vistra fit``
in a subprocess for the rows that used to print a traceback before the message.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from runner import run_vistra

from vistra.data.coco_check import check_coco
from vistra.data.shapes import write_shapes
from vistra.data.sources.base import DataError, load_image, load_image_as_annotated
from vistra.inference.checkpoint import NETWORK_KEY, network_spec
from vistra.inference.spec import PREPROCESS_KEY

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# -- COCO instance files -----------------------------------------------------------------------


def valid_coco(folder: Path) -> dict:
    """Two images on disk, three annotations with ids 9001..9003 (as people's files have)."""
    Image.new("RGB", (40, 30)).save(folder / "a.png")
    Image.new("RGB", (50, 40)).save(folder / "b.png")
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30},
                   {"id": 2, "file_name": "b.png", "width": 50, "height": 40}],
        "annotations": [
            {"id": 9001, "image_id": 1, "category_id": 5, "bbox": [2, 3, 10, 10],
             "segmentation": [[2, 3, 12, 3, 12, 13]], "area": 50, "iscrowd": 0},
            {"id": 9002, "image_id": 2, "category_id": 7, "bbox": [5, 5, 20, 20], "area": 400,
             "iscrowd": 0},
            {"id": 9003, "image_id": 2, "category_id": 5, "bbox": [1, 1, 8, 8], "area": 64,
             "iscrowd": 0},
        ],
        "categories": [{"id": 5, "name": "cat"}, {"id": 7, "name": "dog"}],
    }  # fmt: skip


def ann(index: int, **changes):
    return lambda d: d["annotations"][index].update(changes)


def image(index: int, **changes):
    return lambda d: d["images"][index].update(changes)


def remove(section: str, index: int, key: str):
    return lambda d: d[section][index].pop(key)


def rle_of_wrong_size(d):
    d["annotations"][1]["segmentation"] = {"size": [10, 10], "counts": "abc"}


def unknown_image_for_all(d):
    for annotation in d["annotations"]:
        annotation["image_id"] = 77


def duplicate_image_id(d):
    d["images"][1]["id"] = 1  # b.png's annotations now name image 2, which is gone


# Cases whose cause leaves a second, true problem: annotations of an image or category that
# has no usable id are also reported (once, with a count).
SECOND_PROBLEM = {"category id not an integer", "image without id", "duplicate category id",
                  "duplicate image id, once"}  # fmt: skip

COCO_CASES = {  # name: (change, field, words in the message)
    "no images list": (lambda d: d.pop("images"), "images", "missing or not a list"),
    "category id not an integer": (lambda d: d["categories"][0].update(id="five"),
                                   "categories[0].id", "not an integer"),
    "duplicate category id": (lambda d: d["categories"][1].update(id=5), "categories[1].id",
                              "duplicate id 5"),
    "image without id": (remove("images", 0, "id"), "images[0].id", "missing"),
    "negative image width": (image(0, width=-3), "images[0].width/height", "positive integers"),
    "image without file_name": (remove("images", 0, "file_name"), "images[0].file_name",
                                "missing"),
    "image file not in the folder": (image(1, file_name="gone.jpg"), "images[1].file_name",
                                     "gone.jpg not found"),
    "unknown image id, once for all": (unknown_image_for_all,
                                       "annotations[0] (id 9001).image_id",
                                       "unknown image id 77 (and 2 more annotations with it)"),
    "duplicate image id, once": (duplicate_image_id, "images[1].id",
                                 "duplicate image id 1 (first at images[0]); 1 annotation(s)"),
    "unknown category": (ann(2, category_id=9), "annotations[2] (id 9003).category_id",
                         "unknown category id 9"),
    "NaN in a box": (ann(0, bbox=[2, 3, float("nan"), 10]), "annotations[0] (id 9001).bbox",
                     "nan"),
    "infinite box": (ann(1, bbox=[float("inf"), 3, 4, 10]), "annotations[1] (id 9002).bbox",
                     "inf"),
    "zero-width box": (ann(0, bbox=[2, 3, 0, 10]), "annotations[0] (id 9001).bbox",
                       "non-positive size"),
    "box outside its image": (ann(0, bbox=[35, 3, 10, 10]), "annotations[0] (id 9001).bbox",
                              "outside the 40 x 30 image"),
    "box of three numbers": (ann(1, bbox=[1, 2, 3]), "annotations[1] (id 9002).bbox",
                             "need [x, y, width, height]"),
    "box of strings": (ann(1, bbox=["1", "2", "3", "4"]), "annotations[1] (id 9002).bbox",
                       "need [x, y, width, height]"),
    "polygon of two points": (ann(0, segmentation=[[1, 2, 3, 4]]),
                              "annotations[0] (id 9001).segmentation[0]", ">= 3 (x, y) points"),
    "empty polygon list": (ann(0, segmentation=[]), "annotations[0] (id 9001).segmentation",
                           "empty polygon list"),
    "RLE of another size": (rle_of_wrong_size, "annotations[1] (id 9002).segmentation.size",
                            "differs from the image's [40, 50]"),
    "segmentation of a number": (ann(1, segmentation=7), "annotations[1] (id 9002).segmentation",
                                 "neither polygons nor RLE"),
    "duplicate annotation id": (ann(2, id=9001), "annotations[2] (id 9001).id",
                                "duplicate id 9001"),
    "annotation not an object": (lambda d: d["annotations"].append([1, 2]), "annotations[3]",
                                 "not an object"),
    # issue 28: what pycocotools would trust (an overrunning RLE hangs its evaluation)
    "RLE runs over the image": (ann(1, segmentation={"size": [40, 50], "counts": [0, 10**9]}),
                                "annotations[1] (id 9002).segmentation.counts",
                                "runs sum to 1000000000, not height x width = 2000"),
    "RLE string garbage": (ann(1, segmentation={"size": [40, 50], "counts": "not RLE!"}),
                           "annotations[1] (id 9002).segmentation.counts",
                           "not COCO's compressed RLE string"),
    "RLE string of another size": (ann(1, segmentation={"size": [40, 50], "counts": "0P?"}),
                                   "annotations[1] (id 9002).segmentation.counts",
                                   "not height x width = 2000"),
    "RLE negative run": (ann(1, segmentation={"size": [40, 50], "counts": [1000, -5, 1005]}),
                         "annotations[1] (id 9002).segmentation.counts",
                         "list of non-negative integers"),
    "NaN polygon": (ann(0, segmentation=[[2, 3, float("nan"), 3, 12, 13]]),
                    "annotations[0] (id 9001).segmentation[0]", "not a finite number"),
    "iscrowd as text": (ann(0, iscrowd="0"), "annotations[0] (id 9001).iscrowd",
                        "must be 0 or 1, got '0'"),
    "iscrowd 2": (ann(0, iscrowd=2), "annotations[0] (id 9001).iscrowd", "must be 0 or 1"),
    "image id as text": (ann(0, image_id="1"), "annotations[0] (id 9001).image_id",
                         "must be an integer, got '1'"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(COCO_CASES))
def test_coco_file_problems_are_named_once(tmp_path, name):
    change, field, words = COCO_CASES[name]
    data = valid_coco(tmp_path)
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    assert check_coco(path, tmp_path, image_sizes=True).ok
    change(data)
    path.write_text(json.dumps(data))  # Python writes NaN / Infinity, as people's tools do
    report = check_coco(path, tmp_path, image_sizes=True)
    found = [(p.field, words in p.message) for p in report.problems]
    assert found[0] == (field, True), report.problems
    assert len(found) == 1 + (name in SECOND_PROBLEM), report.problems
    assert all(p.file == str(path) for p in report.problems)
    from vistra.data.sources.coco import COCODetectionSource

    with pytest.raises(ValueError) as refused:  # training refuses it with the same message
        COCODetectionSource(path, tmp_path)
    assert field in str(refused.value) and words in str(refused.value)


@pytest.mark.parametrize(
    "text,field,words",
    [("{\"images\": [}", "line 1 column 13", "malformed JSON"),
     ("[1, 2]", "top level", "expected a JSON object")],
)  # fmt: skip
def test_coco_file_that_is_not_coco(tmp_path, text, field, words):
    path = tmp_path / "instances.json"
    path.write_text(text)
    (problem,) = check_coco(path).problems
    assert (problem.field, words in problem.message) == (field, True)
    (missing,) = check_coco(tmp_path / "nothing.json").problems
    assert (missing.field, missing.message) == ("file", "not found")


def test_image_sizes_against_the_file_exif_warns_and_other_sizes_are_problems(tmp_path):
    data = valid_coco(tmp_path)
    turned = Image.new("RGB", (40, 30))  # stored 40 x 30, shown upright as 30 x 40
    exif = turned.getexif()
    exif[0x0112] = 6
    turned.save(tmp_path / "a.jpg", exif=exif)
    data["images"][0]["file_name"] = "a.jpg"
    data["images"][1]["width"] = 51
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    report = check_coco(path, tmp_path, image_sizes=True)
    assert [(p.field, "EXIF orientation" in p.message) for p in report.warnings] == [
        ("images[0].width/height", True)
    ]
    assert [(p.field, "says 51 x 40 but" in p.message) for p in report.problems] == [
        ("images[1].width/height", True)
    ]


# -- the other readers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad") / "shapes"
    write_shapes(root, 4, 2, 48, seed=5)
    return root


def fresh_shapes(shapes: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(shapes, tmp_path / "shapes"))


def panoptic(root: Path, edit=None, png_dir: Path | None = None):
    from vistra.data.sources.coco_panoptic import COCOPanopticSource

    path = root / "annotations/panoptic_train.json"
    if edit is not None:
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    return COCOPanopticSource(path, root / "images/train", png_dir)


def first_png(root: Path) -> Path:
    data = json.loads((root / "annotations/panoptic_train.json").read_text())
    return root / "annotations/panoptic_train" / data["annotations"][0]["file_name"]


def delete_first_png(root):
    first_png(root).unlink()
    return lambda: panoptic(root)


def delete_first_image(root):
    sorted((root / "images/train").iterdir())[0].unlink()
    return lambda: panoptic(root)


def segment_absent_from_png(root):
    def add(data):
        data["annotations"][0]["segments_info"].append(
            {"id": 4_000_000, "category_id": data["categories"][0]["id"], "iscrowd": 0}
        )

    source = panoptic(root, add)
    return lambda: source[0]


def png_segment_missing_from_json(root):
    source = panoptic(root, lambda d: d["annotations"][0]["segments_info"].pop())
    return lambda: source[0]


def unknown_panoptic_category(root):
    return lambda: panoptic(root, lambda d: d["annotations"][0]["segments_info"][0].update(
        category_id=999))  # fmt: skip


def missing_png_folder(root):
    return lambda: panoptic(root, png_dir=root / "nowhere")


def list_file(root, lines: str):
    from vistra.data.sources.list_file import ListFileSource

    path = root / "images/train/list.txt"
    path.write_text(lines)
    return lambda: ListFileSource(path)


def first_image_name(root) -> str:
    return sorted(p.name for p in (root / "images/train").iterdir())[0]


def semantic(root, labels_edit=None):
    from vistra.data.sources.semantic import SemanticSource

    label_dir = root / "annotations/semantic_train"
    if labels_edit is not None:
        labels_edit(label_dir)
    classes = (root / "semantic_classes.txt").read_text().split()
    return SemanticSource(root / "images/train", label_dir, classes)


def label_out_of_range(root):
    def edit(label_dir):
        path = sorted(label_dir.iterdir())[0]
        Image.fromarray(np.full((48, 48), 77, dtype=np.uint8)).save(path)

    source = semantic(root, edit)
    return lambda: source.label_map(0)


def truncated_image(root):
    path = root / "images/train" / first_image_name(root)
    Image.open(path).convert("RGB").save(path.with_suffix(".jpg"))
    data = path.with_suffix(".jpg").read_bytes()
    path.with_suffix(".jpg").write_bytes(data[: len(data) // 2])
    return lambda: load_image(path.with_suffix(".jpg"))


def text_named_jpg(root):
    path = root / "notes.jpg"
    path.write_text("not an image")
    return lambda: load_image(path)


def annotated_size_wrong(root):
    path = root / "images/train" / first_image_name(root)
    return lambda: load_image_as_annotated(path, (47, 48), "instances_train.json")


def empty_class_folder(root):
    from vistra.data.sources.image_folder import ImageFolderSource

    (root / "classes/empty").mkdir(parents=True)
    return lambda: ImageFolderSource(root / "classes")


READER_CASES = {  # name: (build the corpus -> the call that must fail, error, words)
    "panoptic PNG deleted": (delete_first_png, DataError, "panoptic PNG"),
    "panoptic image deleted": (delete_first_image, DataError, "images (id"),
    "JSON segment absent from its PNG": (segment_absent_from_png, DataError,
                                         "segment id(s) [4000000] that"),
    "PNG segment absent from the JSON": (png_segment_missing_from_json, DataError,
                                         "are not in"),
    "panoptic segment of an unknown category": (unknown_panoptic_category, ValueError,
                                                 "segments_info[0].category_id: unknown"),
    "panoptic PNG folder missing": (missing_png_folder, FileNotFoundError,
                                    "panoptic PNG folder not found"),
    "list file names a missing image": (lambda r: list_file(r, "gone.png 1\n"),
                                        FileNotFoundError, "list.txt:1: image"),
    "list file label not a number": (lambda r: list_file(r, f"{first_image_name(r)} cat\n"),
                                     ValueError, "label must be an integer, got 'cat'"),
    "list file line of three words": (lambda r: list_file(r, "\n\na.png 1 2\n"), ValueError,
                                      "list.txt:3: expected 'path [label]'"),
    "list file negative label": (lambda r: list_file(r, f"{first_image_name(r)} -4\n"),
                                 ValueError, "negative label -4"),
    "label PNG missing": (lambda r: lambda: semantic(r, lambda d: sorted(d.iterdir())[0].unlink()),
                          FileNotFoundError, "no label PNG for 1 image(s)"),
    "label beyond the classes": (label_out_of_range, ValueError, "label 77 but only"),
    "truncated JPEG": (truncated_image, DataError, "cannot read image"),
    "text file named .jpg": (text_named_jpg, DataError, "notes.jpg: cannot read image"),
    "image of another size than its annotation": (annotated_size_wrong, DataError,
                                                  "but instances_train.json says 47 x 48"),
    "class folder without images": (empty_class_folder, ValueError, "no images found"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(READER_CASES))
def test_readers_name_the_file_and_field(shapes, tmp_path, name):
    build, error, words = READER_CASES[name]
    call = build(fresh_shapes(shapes, tmp_path))
    with pytest.raises(error) as raised:
        call()
    assert words in str(raised.value) and "\n" not in str(raised.value)


# -- vistra predict ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory) -> Path:
    """A small Mask2Former checkpoint laid out as the tasks write it (random weights)."""
    from vistra.models import Mask2Former

    torch.manual_seed(0)
    network = Mask2Former(3, backbone="resnet18", dim=32, mask_dim=32, pixel_decoder_layers=1,
                          decoder_layers=2, num_queries=6, heads=4).eval()  # fmt: skip
    path = tmp_path_factory.mktemp("segmenter") / "m2f.ckpt"
    torch.save({NETWORK_KEY: network_spec(network),
                PREPROCESS_KEY: {"resize": "shorter_side", "size": 64, "max_size": 96},
                "state_dict": {f"network.{k}": v for k, v in network.state_dict().items()},
                "vistra_categories": {"ids": [1, 2, 3], "names": ["a", "b", "c"],
                                      "thing_labels": [0]}}, path)  # fmt: skip
    return path


def predict(capsys, *words) -> tuple[int, str]:
    from vistra.inference.command import predict_command

    code = predict_command([str(word) for word in words])
    captured = capsys.readouterr()
    return code, captured.err


def test_predict_refuses_bad_checkpoints_in_one_line(tmp_path, capsys):
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    truncated = tmp_path / "truncated.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    weights_only = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(3)}}, weights_only)
    for ckpt, words in ((tmp_path / "gone.ckpt", "gone.ckpt"), (truncated, "truncated.ckpt"),
                        (weights_only, "weights.ckpt")):  # fmt: skip
        code, err = predict(capsys, "--ckpt", ckpt, "--input", tmp_path / "x.png", "--output",
                            tmp_path / "out")  # fmt: skip
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err


def test_predict_input_and_option_problems_in_one_line(tmp_path, capsys, segmenter):
    (tmp_path / "empty").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    for words, expected in (
        (["--input", tmp_path / "missing"], "no such file or folder"),
        (["--input", tmp_path / "empty"], "no images"),
        (["--input", tmp_path / "x.png", "--batch-size", "0"], "--batch-size must be at least 1"),
    ):
        code, err = predict(capsys, "--ckpt", segmenter, "--output", tmp_path / "out", *words)
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err


def test_predict_skips_an_unreadable_image_and_keeps_a_jpg_and_a_png_apart(
    tmp_path, capsys, segmenter
):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(folder / "a.jpg")
    Image.new("RGB", (30, 40), (10, 200, 10)).save(folder / "a.png")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    code, err = predict(capsys, "--ckpt", segmenter, "--input", folder, "--output",
                        tmp_path / "out")  # fmt: skip
    assert code == 0 and "skipped" in err and "broken.png" in err
    out = tmp_path / "out"
    entries = json.loads((out / "panoptic.json").read_text())["annotations"]
    assert sorted(entry["file_name"] for entry in entries) == ["a.jpg.png", "a.png.png"]
    assert sorted(p.name for p in (out / "pictures").iterdir()) == ["a.jpg.png", "a.png.png"]
    sizes = {p.name: Image.open(p).size for p in (out / "semantic").iterdir()}
    assert sizes == {"a.jpg.png": (40, 30), "a.png.png": (30, 40)}  # neither overwrote the other


def test_predict_gives_a_huge_image_reduced_maps(tmp_path, capsys, segmenter):
    from vistra.inference.images import MAX_MAP_PIXELS

    Image.new("RGB", (10_000, 6_000), (90, 120, 200)).save(tmp_path / "huge.png")
    code, err = predict(capsys, "--ckpt", segmenter, "--input", tmp_path / "huge.png",
                        "--output", tmp_path / "out")  # fmt: skip
    assert code == 0, err
    (entry,) = json.loads((tmp_path / "out/images.json").read_text())
    assert (entry["original_width"], entry["original_height"]) == (10_000, 6_000)
    assert entry["width"] * entry["height"] <= MAX_MAP_PIXELS
    assert abs(entry["width"] / entry["height"] - 10 / 6) < 0.01
    assert Image.open(tmp_path / "out/semantic/huge.png").size == (entry["width"],
                                                                     entry["height"])  # fmt: skip
    assert "reduced size" in err


# -- vistra fit, in a subprocess: one line, no traceback ----------------------------------------


def vistra_fails(*args, cwd: Path) -> str:
    result = run_vistra(*args, cwd=cwd)
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-1]


def segmentation_args(root: Path, **overrides) -> list[str]:
    ann = root / "annotations"
    values = {
        "train_annotations": ann / "panoptic_train.json",
        "train_images": root / "images/train",
        "val_annotations": ann / "panoptic_val.json",
        "val_images": root / "images/val",
        "val_instances": ann / "instances_val.json",
        "batch_size": 2,
        "size": 48,
    }
    values.update(overrides)
    return ["--config", CONFIGS / "mask2former/shapes.yaml", "--trainer.max_epochs=1",
            *(f"--data.init_args.{key}={value}" for key, value in values.items())]  # fmt: skip


def test_fit_batch_size_minus_five(shapes, tmp_path):
    line = vistra_fails("fit", *segmentation_args(shapes, batch_size=-5), cwd=tmp_path)
    assert line == "vistra: batch_size must be >= 1, got -5"


def test_validate_missing_instance_file(shapes, tmp_path):
    missing = tmp_path / "instances_val.json"
    line = vistra_fails("validate", *segmentation_args(shapes, val_instances=missing),
                        cwd=tmp_path)  # fmt: skip
    assert line == f"vistra: {missing}: val_instances file not found"


def test_fit_missing_panoptic_png(shapes, tmp_path):
    root = fresh_shapes(shapes, tmp_path)
    png = first_png(root)
    png.unlink()
    line = vistra_fails("fit", *segmentation_args(root), cwd=tmp_path)
    assert line.startswith("vistra: ") and f"panoptic PNG {png} not found" in line


def test_fit_list_file_naming_a_missing_image(tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "one.png")
    (tmp_path / "train.txt").write_text("one.png\ntwo.png\n")
    line = vistra_fails(
        "fit", "--config", CONFIGS / "mae/vit_tiny_digits.yaml",
        "--data.init_args.train=vistra.data.ListFileSource",
        f"--data.init_args.train.list_file={tmp_path / 'train.txt'}", cwd=tmp_path,
    )  # fmt: skip
    assert (
        line == f"vistra: {tmp_path / 'train.txt'}:2: image {tmp_path / 'two.png'} does not exist"
    )


def test_fit_truncated_image_mid_training(shapes, tmp_path):
    root = fresh_shapes(shapes, tmp_path)
    path = sorted((root / "images/train").iterdir())[-1]
    path.write_bytes(path.read_bytes()[:200])
    line = vistra_fails("fit", *segmentation_args(root), cwd=tmp_path)
    assert line.startswith(f"vistra: {path}: cannot read image")


def test_fit_segment_listed_but_absent_from_its_png(shapes, tmp_path):
    root = fresh_shapes(shapes, tmp_path)
    path = root / "annotations/panoptic_train.json"
    data = json.loads(path.read_text())
    data["annotations"][1]["segments_info"].append(
        {"id": 4_000_000, "category_id": data["categories"][0]["id"], "iscrowd": 0}
    )
    path.write_text(json.dumps(data))
    line = vistra_fails("fit", *segmentation_args(root), cwd=tmp_path)
    assert "segment id(s) [4000000] that" in line and line.startswith(f"vistra: {path}")


@pytest.fixture(scope="module")
def detr_run(trained) -> Path:
    """A DETR checkpoint of the shapes config (the session's)."""
    return trained("detr")


def test_a_checkpoint_of_another_family(shapes, tmp_path, detr_run):
    line = vistra_fails("fit", *segmentation_args(shapes), "--ckpt_path", detr_run, cwd=tmp_path)
    assert line.startswith(f"vistra: --ckpt_path {detr_run}: a checkpoint of DetectionTask, but "
                           "the config trains SegmentationTask")  # fmt: skip
    line = vistra_fails("fit", *segmentation_args(shapes),
                        f"--model.init_args.network.init_args.checkpoint={detr_run}",
                        cwd=tmp_path)  # fmt: skip
    assert line.startswith(f"vistra: {detr_run}: not a Mask2Former checkpoint")
