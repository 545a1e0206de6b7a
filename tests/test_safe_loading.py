"""Files from strangers are data: every path that reads a checkpoint or weight file refuses one
that would run code, and writes nothing; `--unsafe-load` is the one way to trust a file."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from runner import run_vistra

from vistra.convert.safe import UnsafeFileError
from vistra.models import SupConModel


class Payload:
    """Unpickling this calls ``os.mkdir(marker)``: proof that the file ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def vistra(*args, cwd):
    return run_vistra(*args, cwd=cwd)


@pytest.fixture()
def encoder_checkpoint() -> dict:
    network = SupConModel("resnet18", hidden_dim=16, feat_dim=8)
    spec = {"class_path": "vistra.models.supcon.SupConModel", "init_args": dict(network.config)}
    state = {f"network.{k}": v for k, v in network.state_dict().items()}
    return {"vistra_network": spec, "state_dict": state,
            "vistra_preprocess": {"resize": "center_crop", "size": 32}}  # fmt: skip


def hostile_checkpoint(folder: Path, good: dict, suffix: str = ".ckpt") -> tuple[Path, Path]:
    marker = folder / "pwned"
    path = folder / f"stranger{suffix}"
    torch.save({**good, "extra": Payload(marker)}, path)
    return path, marker


def test_vistra_predict_and_export_refuse_a_pickle_that_runs_code(tmp_path, encoder_checkpoint):
    path, marker = hostile_checkpoint(tmp_path, encoder_checkpoint)
    Image.new("RGB", (32, 32)).save(tmp_path / "photo.png")
    for command in (["predict", "--ckpt", path, "--input", "photo.png", "--output", "out"],
                    ["export", "--ckpt", path, "--output", "model.onnx"]):  # fmt: skip
        result = vistra(*command, cwd=tmp_path)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "refused to load" in result.stderr and "--unsafe-load" in result.stderr
        assert "Traceback" not in result.stderr
        assert not marker.exists()
    assert not (tmp_path / "out").exists() and not (tmp_path / "model.onnx").exists()


def test_probe_and_fine_tune_checkpoints_refuse_a_pickle_that_runs_code(
    tmp_path, encoder_checkpoint
):
    from vistra.models import ViTClassifier
    from vistra.tasks import LinearProbe

    path, marker = hostile_checkpoint(tmp_path, encoder_checkpoint)
    with pytest.raises(UnsafeFileError, match="refused to load"):
        LinearProbe(num_classes=3, checkpoint=str(path))
    pth, _ = hostile_checkpoint(tmp_path, {"model": {}}, suffix=".pth")
    with pytest.raises(UnsafeFileError, match="refused to load"):
        ViTClassifier(3, "tiny", 32, 8, checkpoint=str(pth))
    assert not marker.exists()


def test_detectron2_pkl_loads_arrays_and_refuses_anything_else(tmp_path):
    from vistra.convert.files import read_state_dict

    arrays = {"sem_seg_head.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
              "backbone.bn.running_mean": np.zeros(3, dtype=np.float64)}  # fmt: skip
    good = tmp_path / "model_final.pkl"
    with open(good, "wb") as file:  # the model zoo's layout: arrays in a dict, a note beside
        pickle.dump({"model": arrays, "__author__": "someone", "matching_heuristics": True}, file)
    state = read_state_dict(good)
    torch.testing.assert_close(state["sem_seg_head.weight"], torch.arange(6.0).view(2, 3))

    marker = tmp_path / "pwned"
    bad = tmp_path / "hostile.pkl"
    with open(bad, "wb") as file:
        pickle.dump({"model": {**arrays, "x": Payload(marker)}}, file)
    with pytest.raises(UnsafeFileError, match=r"refused to load.*os\.mkdir|posix\.mkdir"):
        read_state_dict(bad)
    from vistra.models import Mask2Former

    with pytest.raises(UnsafeFileError):
        Mask2Former(3, backbone="resnet18", dim=32, mask_dim=32, pixel_decoder_layers=1,
                    decoder_layers=1, heads=2, num_queries=2, checkpoint=str(bad))  # fmt: skip
    assert not marker.exists()


def test_a_checkpoint_of_plain_strings_cannot_choose_the_code(tmp_path, encoder_checkpoint):
    from vistra import Predictor

    marker = tmp_path / "pwned"
    spec = {"class_path": "os.mkdir", "init_args": {"path": str(marker)}}
    path = tmp_path / "plain.ckpt"
    torch.save({**encoder_checkpoint, "vistra_network": spec}, path)
    with pytest.raises(ValueError, match=r"asks for 'os.mkdir', which is not a vistra network"):
        Predictor.from_checkpoint(path)
    result = vistra("export", "--ckpt", path, "--output", "m.onnx", cwd=tmp_path)
    assert result.returncode == 2 and "not a vistra network" in result.stderr
    assert not marker.exists()


def test_unsafe_load_opens_a_trusted_file_with_python_objects(tmp_path, encoder_checkpoint):
    path = tmp_path / "trusted.ckpt"
    torch.save({**encoder_checkpoint, "where": Path("/some/folder")}, path)  # not plain data
    Image.new("RGB", (32, 32)).save(tmp_path / "photo.png")
    refused = vistra("predict", "--ckpt", path, "--input", "photo.png", "--output", "out",
                     cwd=tmp_path)  # fmt: skip
    assert refused.returncode == 2 and "refused to load" in refused.stderr
    trusted = vistra("predict", "--ckpt", path, "--input", "photo.png", "--output", "out",
                     "--unsafe-load", cwd=tmp_path)  # fmt: skip
    assert trusted.returncode == 0, trusted.stderr[-2000:]
    assert "unsafe load" in trusted.stderr and (tmp_path / "out" / "embeddings.npy").is_file()


def test_fit_ckpt_path_refuses_hostile_files_before_anything_runs(tmp_path, encoder_checkpoint):
    config = Path(__file__).resolve().parents[1] / "configs/supcon/resnet18_digits.yaml"
    path, marker = hostile_checkpoint(tmp_path, encoder_checkpoint)
    result = vistra("fit", "--config", config, "--ckpt_path", path, cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "refused to load" in result.stderr and "it names posix.mkdir" in result.stderr
    assert not marker.exists()

    foreign = tmp_path / "foreign_task.ckpt"
    torch.save({**encoder_checkpoint, "hyper_parameters": {"_class_path": "os.mkdir"}}, foreign)
    result = vistra("fit", "--config", config, "--ckpt_path", foreign, cwd=tmp_path)
    assert result.returncode != 0 and "'os.mkdir', which is not one of vistra.tasks" in (
        result.stderr
    )


def test_predict_names_an_output_folder_it_cannot_write(tmp_path, encoder_checkpoint):
    path = tmp_path / "encoder.ckpt"
    torch.save(encoder_checkpoint, path)
    Image.new("RGB", (32, 32)).save(tmp_path / "photo.png")
    (tmp_path / "taken").write_text("a file where the output folder should go")
    result = vistra("predict", "--ckpt", path, "--input", "photo.png", "--output",
                    "taken/out", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--output taken/out: cannot write there" in result.stderr


def test_the_networks_a_checkpoint_may_name_are_vistras_five_models():
    from vistra import models
    from vistra.inference.checkpoint import VISTRA_NETWORKS, vistra_network

    classes = [models.SupConModel, models.MaskedAutoencoder, models.ViTClassifier, models.DETR,
               models.Mask2Former]  # fmt: skip
    assert sorted(VISTRA_NETWORKS) == sorted(f"{c.__module__}.{c.__qualname__}" for c in classes)
    assert {vistra_network(path) for path in VISTRA_NETWORKS} == set(classes)
