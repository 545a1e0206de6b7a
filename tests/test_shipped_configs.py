"""Every shipped config's network at its full size, built and run forward once on the meta
device (shapes without memory or initialisation, so ViT-H costs what ViT-Tiny does): a
full-size config whose network cannot be built, or whose parts do not fit together at the
configured input size, fails here although the command tests run small sizes."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
import torch
import yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
WITH_NETWORK = sorted(
    path for path in CONFIGS.rglob("*.yaml")
    if "network" in yaml.safe_load(path.read_text())["model"]["init_args"]
)  # fmt: skip
FROM_DATA = 10  # classes, where the config takes them from the data


def network_of(config: dict) -> tuple[type, dict]:
    spec = config["model"]["init_args"]["network"]
    module, name = spec["class_path"].rsplit(".", 1)
    assert module.startswith("vistra.models"), spec["class_path"]
    kind = getattr(importlib.import_module(module), name)
    options = dict(spec.get("init_args") or {})
    for key in ("checkpoint", "backbone_checkpoint"):  # weight files the user gives: none here
        options.pop(key, None)
    if "num_classes" in inspect.signature(kind).parameters:
        options["num_classes"] = options.get("num_classes") or FROM_DATA
    return kind, options


def test_every_config_with_a_network_is_here():
    assert len(WITH_NETWORK) >= 20


@pytest.mark.parametrize("path", WITH_NETWORK, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_full_size_network_builds_and_runs_at_its_input_size(path):
    config = yaml.safe_load(path.read_text())
    kind, options = network_of(config)
    data = config["data"]["init_args"]
    with torch.device("meta"):
        network = kind(**options)
        assert sum(p.numel() for p in network.parameters()) > 0
        if kind.__name__ == "DETR":
            side = data.get("max_size", 1333)
            out = network(torch.zeros(2, 3, 800, side), torch.ones(2, 800, side, dtype=torch.bool))
            queries = options.get("num_queries", 100)
            assert out["pred_logits"].shape == (2, queries, options["num_classes"] + 1)
            assert out["pred_boxes"].shape == (2, queries, 4)
        elif kind.__name__ == "Mask2Former":
            side = data["size"]
            out = network(torch.zeros(2, 3, side, side))
            queries = options.get("num_queries", 100)
            assert out["pred_logits"].shape == (2, queries, options["num_classes"] + 1)
            assert out["pred_masks"].shape == (2, queries, side // 4, side // 4)
        else:
            side = options.get("image_size") or data["image_size"]
            out = network(torch.zeros(2, 3, side, side))
            if kind.__name__ == "MaskedAutoencoder":
                patch = options["patch_size"]
                assert out["pred"].shape == (2, (side // patch) ** 2, patch * patch * 3)
            elif kind.__name__ == "ViTClassifier":
                assert out.shape == (2, options["num_classes"])
            else:
                assert out.shape == (2, options.get("feat_dim", 128))
