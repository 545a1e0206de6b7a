"""Images as people see them: EXIF orientation applied, 16-bit grey scaled rather than
clipped, the same pixels whichever way the file stores them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vistra.data.sources.base import ImageLoadError, load_image, load_image_as_annotated

ORIENTATION = 0x0112
TURN_TO_DISPLAY = 6  # "rotate 90 degrees clockwise to display"


@pytest.fixture()
def upright() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))  # 40 wide, 24 high


def stored_turned(upright: Image.Image, path) -> None:
    """Write ``upright`` as a camera does: pixels turned, EXIF saying how to turn them back."""
    exif = Image.Exif()
    exif[ORIENTATION] = TURN_TO_DISPLAY
    upright.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)


def test_exif_orientation_gives_the_upright_pixels(tmp_path, upright):
    stored_turned(upright, tmp_path / "camera.png")
    assert Image.open(tmp_path / "camera.png").size == (24, 40)  # as stored
    got = load_image(tmp_path / "camera.png")
    np.testing.assert_array_equal(np.asarray(got), np.asarray(upright))


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    grey = np.random.default_rng(1).integers(0, 256, (16, 20), dtype=np.uint16)
    Image.fromarray(grey * 257).save(tmp_path / "deep.png")  # 16-bit PNG, same picture
    Image.fromarray(grey.astype(np.uint8)).save(tmp_path / "plain.png")
    deep, plain = load_image(tmp_path / "deep.png"), load_image(tmp_path / "plain.png")
    assert deep.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(deep), np.asarray(plain))
    assert abs(np.asarray(deep).mean() - grey.mean()) < 1e-9


def test_palette_with_transparency_reads_as_rgb(tmp_path, upright):
    upright.convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png", transparency=0)
    image = load_image(tmp_path / "p.png")
    assert image.mode == "RGB" and image.size == upright.size


def test_annotated_size_decides_between_turned_and_stored_pixels(tmp_path, upright):
    path = tmp_path / "camera.png"
    stored_turned(upright, path)
    on_screen = load_image_as_annotated(path, (40, 24), "file.json")
    np.testing.assert_array_equal(np.asarray(on_screen), np.asarray(upright))
    with pytest.warns(UserWarning, match="EXIF orientation turns it, but file.json gives the size"):
        as_stored = load_image_as_annotated(path, (24, 40), "file.json")
    assert as_stored.size == (24, 40)
    with pytest.raises(ImageLoadError, match=r"after its EXIF orientation \(24 x 40 as stored\)"):
        load_image_as_annotated(path, (50, 50), "file.json")


def test_predictor_sees_an_exif_photo_as_its_upright_copy(tmp_path, upright):
    import torch

    from vistra.data.preprocess import Preprocess
    from vistra.inference.predictor import Predictor
    from vistra.inference.spec import InferenceSpec
    from vistra.models import SupConModel

    stored_turned(upright, tmp_path / "camera.png")
    upright.save(tmp_path / "upright.png")
    torch.manual_seed(0)
    network = SupConModel("resnet18", hidden_dim=16, feat_dim=8)
    spec = InferenceSpec("embedding", Preprocess("center_crop", 32))
    predictor = Predictor(network, spec)
    features = predictor.embed([str(tmp_path / "camera.png"), str(tmp_path / "upright.png"),
                                Image.open(tmp_path / "camera.png")])  # fmt: skip
    torch.testing.assert_close(features[0], features[1], rtol=0, atol=0)
    torch.testing.assert_close(features[2], features[1], rtol=0, atol=0)


def test_coco_training_reads_an_exif_photo_upright(tmp_path, upright):
    from vistra.data import COCODetectionSource

    (tmp_path / "images").mkdir()
    stored_turned(upright, tmp_path / "images" / "camera.png")
    annotations = {"images": [{"id": 1, "file_name": "camera.png", "width": 40, "height": 24}],
                   "annotations": [{"id": 7, "image_id": 1, "category_id": 1,
                                    "bbox": [30, 2, 8, 20], "area": 160, "iscrowd": 0}],
                   "categories": [{"id": 1, "name": "thing"}]}  # fmt: skip
    (tmp_path / "instances.json").write_text(json.dumps(annotations))
    image, target = COCODetectionSource(tmp_path / "instances.json", tmp_path / "images")[0]
    assert tuple(image.shape) == (3, 24, 40)
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), np.asarray(upright))
