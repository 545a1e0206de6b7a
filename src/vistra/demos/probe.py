"""The SupCon and MAE demos: pre-training on the digits that ship with scikit-learn, then probes.

Each demo pre-trains on the digits, trains a linear probe on cached features of the frozen
encoder and the same probe on a random encoder of the same architecture, prints the numbers
and writes ``embeddings.png`` (PCA of held-out encoder features, random vs trained) and
``results.json`` (the numbers); MAE also writes its reconstruction grids.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from vistra.demos.timing import time_rows
from vistra.engine.lightning_cli import VistraCLI
from vistra.evaluation.linear_probe import fit_linear_probe, top_k_accuracy
from vistra.inference.checkpoint import build_network, load_network, network_spec

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEMO_CONFIGS = {
    "supcon": ("supcon/resnet18_digits.yaml", "SupCon"),
    "mae": ("mae/vit_tiny_digits.yaml", "MAE"),
}
# The probe trains on cached features (the encoder is frozen), so 100 epochs take seconds.
PROBE_RECIPE = dict(epochs=100, batch_size=256, lr=0.1, feature_norm=True)


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
    pretrain_config, title = DEMO_CONFIGS[name]
    started = time.perf_counter()
    pretrain = _fit(CONFIGS / pretrain_config, out / "pretrain", *extra_args)
    stage1 = pretrain.trainer.checkpoint_callback.last_model_path
    pretrain_seconds = time.perf_counter() - started

    datamodule = pretrain.datamodule
    probing = time.perf_counter()
    trained = _probe(load_network(stage1), datamodule)
    total_seconds = time.perf_counter() - started
    baseline = _probe(_random_network(pretrain), datamodule)
    timing, parts = time_rows([pretrain], after=time.perf_counter() - probing)

    first_loss, last_loss = _first_and_last_train_loss(pretrain)
    results = {
        "pretrain_knn_top1": float(pretrain.trainer.callback_metrics.get("val/knn_top1", "nan")),
        "probe_top1": trained["top1"],
        "random_probe_top1": baseline["top1"],
        "pretrain_seconds": pretrain_seconds,
        "pretrain_and_probe_seconds": total_seconds,
        "checkpoint": stage1,
        "train_loss_first": first_loss,
        "train_loss_last": last_loss,
        "time": parts,
    }
    panels = [
        ("random encoder", baseline["val_features"], baseline["val_labels"]),
        (f"{title} encoder", trained["val_features"], trained["val_labels"]),
    ]
    from vistra.inference.pictures import embedding_scatter

    picture = embedding_scatter(panels, datamodule.classes, out / "embeddings.png")
    results["picture"] = str(picture)
    rows = [
        ("training loss, first -> last logged", f"{first_loss:.3f} -> {last_loss:.3f}"),
        ("kNN top-1 after pre-training", f"{results['pretrain_knn_top1']:.3f}"),
        (f"linear probe, {title} encoder", f"{results['probe_top1']:.3f}"),
        ("linear probe, random encoder", f"{results['random_probe_top1']:.3f}"),
        ("pre-training + probe wall time", f"{total_seconds:.0f} s"),
        *[(label.replace("evaluation", "evaluation and probes"), text) for label, text in timing],
        ("checkpoint", stage1),
        ("picture", results["picture"]),
    ]
    numbers = {k: v for k, v in results.items() if isinstance(v, (int, float, str, dict))}
    (out / "results.json").write_text(json.dumps(numbers, indent=2) + "\n")
    print(f"\n{title} on digits (held-out split, {len(datamodule.val_source)} images)")
    print("\n".join(f"  {label:<37}{value}" for label, value in rows))
    return results


@torch.no_grad()
def _features(network: torch.nn.Module, loader) -> tuple[torch.Tensor, torch.Tensor]:
    network.eval()
    features, labels = zip(*[(network.forward_features(x).float(), y) for x, y in loader])
    return torch.cat(features), torch.cat(labels)


def _probe(network: torch.nn.Module, datamodule) -> dict:
    """Linear probe on the frozen ``network``'s features of the un-augmented images.

    Returns ``{"top1", "top5", "val_features": [N, D], "val_labels": [N]}``.
    """
    train_x, train_y = _features(network, datamodule.eval_loader(datamodule.train_source))
    val_x, val_y = _features(network, datamodule.eval_loader(datamodule.val_source))
    num_classes = len(datamodule.classes)
    head = fit_linear_probe(train_x, train_y, num_classes, **PROBE_RECIPE)
    with torch.no_grad():
        logits = head(val_x)
    return {
        "top1": top_k_accuracy(logits, val_y, 1),
        "top5": top_k_accuracy(logits, val_y, 5),
        "val_features": val_x,
        "val_labels": val_y,
    }


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


def _random_network(pretrain: VistraCLI) -> torch.nn.Module:
    """The pre-trained architecture with fresh random weights.

    BatchNorm statistics, where the network has any, are first measured on the training images
    (``update_bn``): with the initial running statistics a random ResNet maps every image to
    almost the same vector, which would make the baseline look worse than it really is.
    """
    torch.manual_seed(0)
    network = build_network(network_spec(pretrain.model.network))
    datamodule = pretrain.datamodule
    images_only = ([images] for images, _ in datamodule.eval_loader(datamodule.train_source))
    torch.optim.swa_utils.update_bn(images_only, network)
    return network
