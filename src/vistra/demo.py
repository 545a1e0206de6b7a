"""``vistra demo NAME``: built-in end-to-end runs on data that ships with the dependencies.

Each demo pre-trains on the digits, trains a linear probe on the frozen encoder, trains the
same probe on a random encoder of the same architecture, prints the numbers and writes
``embeddings.png`` (PCA of held-out encoder features, random vs trained); MAE also writes its
reconstruction grids.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from vistra.checkpoint import NETWORK_KEY, build_network, network_spec
from vistra.cli import VistraCLI

CONFIGS = Path(__file__).resolve().parent / "configs"
DEMO_CONFIGS = {
    "supcon": ("supcon/resnet18_digits.yaml", "supcon/linear_digits.yaml", "SupCon"),
    "mae": ("mae/vit_tiny_digits.yaml", "mae/linear_digits.yaml", "MAE"),
}


def run_demo(name: str, *extra_args: str, out_dir: str | Path = "vistra_runs") -> dict:
    if name not in DEMO_CONFIGS:
        raise ValueError(f"unknown demo {name!r}; choose from {sorted(DEMO_CONFIGS)}")
    return pretrain_and_probe(name, Path(out_dir) / f"demo_{name}", *extra_args)


def _fit(config: Path, root: Path, *args: str) -> VistraCLI:
    return VistraCLI(
        args=["fit", "--config", str(config), "--trainer.default_root_dir", str(root), *args]
    )


def pretrain_and_probe(name: str, out: Path, *extra_args: str) -> dict:
    """Run demo ``name`` into ``out``; ``extra_args`` override the pre-training config.

    Returns ``{"pretrain_knn_top1", "probe_top1", "random_probe_top1", "pretrain_seconds",
    "pretrain_and_probe_seconds", "checkpoint", "picture", "train_loss_first",
    "train_loss_last"}``.
    """
    pretrain_config, probe_config, title = DEMO_CONFIGS[name]
    started = time.perf_counter()
    pretrain = _fit(CONFIGS / pretrain_config, out / "pretrain", *extra_args)
    stage1 = pretrain.trainer.checkpoint_callback.last_model_path
    pretrain_seconds = time.perf_counter() - started

    probe = _fit(CONFIGS / probe_config, out / "linear", "--model.checkpoint", stage1)
    total_seconds = time.perf_counter() - started
    random_checkpoint = _random_encoder_checkpoint(pretrain, out / "random_encoder.ckpt")
    baseline = _fit(CONFIGS / probe_config, out / "linear_random", "--model.checkpoint",
                    random_checkpoint)  # fmt: skip

    first_loss, last_loss = _first_and_last_train_loss(pretrain)
    results = {
        "pretrain_knn_top1": float(pretrain.trainer.callback_metrics.get("val/knn_top1", "nan")),
        "probe_top1": float(probe.trainer.callback_metrics["val/top1"]),
        "random_probe_top1": float(baseline.trainer.callback_metrics["val/top1"]),
        "pretrain_seconds": pretrain_seconds,
        "pretrain_and_probe_seconds": total_seconds,
        "checkpoint": stage1,
        "train_loss_first": first_loss,
        "train_loss_last": last_loss,
    }
    results["picture"] = str(_embedding_picture(pretrain, baseline, title, out / "embeddings.png"))
    rows = [
        ("training loss, first -> last logged", f"{first_loss:.3f} -> {last_loss:.3f}"),
        ("kNN top-1 after pre-training", f"{results['pretrain_knn_top1']:.3f}"),
        (f"linear probe, {title} encoder", f"{results['probe_top1']:.3f}"),
        ("linear probe, random encoder", f"{results['random_probe_top1']:.3f}"),
        ("pre-training + probe wall time", f"{total_seconds:.0f} s"),
        ("checkpoint", stage1),
        ("picture", results["picture"]),
    ]
    print(f"\n{title} on digits (held-out split, 360 images)")
    print("\n".join(f"  {label:<37}{value}" for label, value in rows))
    return results


def _first_and_last_train_loss(cli: VistraCLI) -> tuple[float, float]:
    """First and last logged ``train/loss`` from the run's CSV log (nan without one)."""
    metrics = Path(cli.trainer.log_dir or "") / "metrics.csv"
    if not metrics.is_file():
        return float("nan"), float("nan")
    import csv

    with metrics.open() as handle:
        losses = [
            float(row["train/loss"]) for row in csv.DictReader(handle) if row.get("train/loss")
        ]
    return (losses[0], losses[-1]) if losses else (float("nan"), float("nan"))


def _random_encoder_checkpoint(pretrain: VistraCLI, path: Path) -> str:
    """The pre-trained architecture with fresh random weights, saved like a stage-1 checkpoint.

    BatchNorm statistics, where the network has any, are first measured on the training images
    (``update_bn``): with the initial running statistics a random ResNet maps every image to
    almost the same vector, which would make the baseline look worse than it really is.
    """
    torch.manual_seed(0)
    spec = network_spec(pretrain.model.network)
    network = build_network(spec)
    datamodule = pretrain.datamodule
    images_only = ([images] for images, _ in datamodule.eval_loader(datamodule.train_source))
    torch.optim.swa_utils.update_bn(images_only, network)
    state = {f"network.{key}": value for key, value in network.state_dict().items()}
    torch.save({NETWORK_KEY: spec, "state_dict": state}, path)
    return str(path)


@torch.no_grad()
def _embedding_picture(pretrain: VistraCLI, baseline: VistraCLI, title: str, path: Path) -> Path:
    from vistra.visualize import embedding_scatter

    datamodule = pretrain.datamodule
    loader = datamodule.eval_loader(datamodule.val_source)
    panels = []
    for panel_title, network in (
        ("random encoder", baseline.model.network),
        (f"{title} encoder", pretrain.model.network),
    ):
        network.eval()
        features, labels = zip(*[(network.forward_features(x), y) for x, y in loader])
        panels.append((panel_title, torch.cat(features), torch.cat(labels)))
    return embedding_scatter(panels, datamodule.classes, path)
