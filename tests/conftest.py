"""Fixtures every test module may take: the ``vistra`` command run as a test runs it, and the
session's shared trained models (each trained once, on first use, and only read after)."""

from __future__ import annotations

from pathlib import Path

import pytest
from families import TrainedModels, write_family_data
from runner import run_vistra


@pytest.fixture
def vistra():
    """``vistra(*args, cwd=..., env=None) -> Ran``: the command in this process (``runner``)."""
    return run_vistra


@pytest.fixture(scope="session")
def family_data(tmp_path_factory) -> Path:
    """``families.write_family_data``: shapes in COCO files and the same images in class
    folders."""
    return write_family_data(tmp_path_factory.mktemp("families"))


@pytest.fixture(scope="session")
def trained(family_data, tmp_path_factory) -> TrainedModels:
    """``trained(family) -> last.ckpt``, ``trained.printed(family)`` (``families``)."""
    return TrainedModels(family_data, tmp_path_factory)


@pytest.fixture(scope="session")
def mae_learning_run(tmp_path_factory) -> dict:
    """The MAE demo's pre-training for 40 of its 80 epochs and its probes
    (``pretrain_and_probe``): the learning test's run, and the pre-trained encoder of the
    probe and fine-tuning tests (``"checkpoint"``)."""
    from vistra.demos.probe import pretrain_and_probe

    shorter = ["--trainer.max_epochs=40", "--trainer.check_val_every_n_epoch=40",
               "--trainer.enable_progress_bar=false"]  # fmt: skip
    return pretrain_and_probe("mae", tmp_path_factory.mktemp("mae_learning"), *shorter)
