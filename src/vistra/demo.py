"""``vistra demo NAME``: built-in end-to-end runs on data that ships with the dependencies."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from vistra.checkpoint import NETWORK_KEY, build_network, network_spec
from vistra.cli import VistraCLI

CONFIGS = Path(__file__).resolve().parent / "configs"


def run_demo(name: str, *extra_args: str, out_dir: str | Path = "vistra_runs") -> dict:
    if name == "supcon":
        return supcon_demo(Path(out_dir) / "demo_supcon", *extra_args)
    raise ValueError(f"unknown demo {name!r}")


def _fit(config: Path, root: Path, *args: str) -> VistraCLI:
    return VistraCLI(
        args=["fit", "--config", str(config), "--trainer.default_root_dir", str(root), *args]
    )


def supcon_demo(out: Path, *extra_args: str) -> dict:
    """SupCon on the digits: pre-train, linear probe, the same probe on a random encoder.

    Prints the three numbers, writes ``embeddings.png`` (PCA of held-out encoder features, random
    vs trained) and returns ``{"pretrain_knn_top1", "probe_top1", "random_probe_top1", ...}``.
    """
    started = time.perf_counter()
    pretrain = _fit(CONFIGS / "supcon" / "resnet18_digits.yaml", out / "pretrain", *extra_args)
    stage1 = pretrain.trainer.checkpoint_callback.last_model_path
    knn = float(pretrain.trainer.callback_metrics.get("val/knn_top1", float("nan")))
    pretrain_seconds = time.perf_counter() - started

    linear_config = CONFIGS / "supcon" / "linear_digits.yaml"
    probe = _fit(linear_config, out / "linear", "--model.checkpoint", stage1)
    total_seconds = time.perf_counter() - started
    random_checkpoint = _random_encoder_checkpoint(pretrain, out / "random_encoder.ckpt")
    baseline = _fit(linear_config, out / "linear_random", "--model.checkpoint", random_checkpoint)

    results = {
        "pretrain_knn_top1": knn,
        "probe_top1": float(probe.trainer.callback_metrics["val/top1"]),
        "random_probe_top1": float(baseline.trainer.callback_metrics["val/top1"]),
        "pretrain_seconds": pretrain_seconds,
        "pretrain_and_probe_seconds": total_seconds,
        "checkpoint": stage1,
    }
    results["picture"] = str(_embedding_picture(pretrain, baseline, out / "embeddings.png"))
    print(
        "\nSupCon on digits (held-out split, 360 images)\n"
        f"  kNN top-1 after pre-training      {results['pretrain_knn_top1']:.3f}\n"
        f"  linear probe, SupCon encoder      {results['probe_top1']:.3f}\n"
        f"  linear probe, random encoder      {results['random_probe_top1']:.3f}\n"
        f"  pre-training + probe wall time    {total_seconds:.0f} s\n"
        f"  checkpoint                        {stage1}\n"
        f"  picture                           {results['picture']}"
    )
    return results


def _random_encoder_checkpoint(pretrain: VistraCLI, path: Path) -> str:
    """The stage-1 architecture with fresh random weights, saved like a stage-1 checkpoint.

    Its BatchNorm statistics are first measured on the training images (``update_bn``): with
    the initial running statistics a random ResNet maps every image to almost the same vector,
    which would make the baseline look worse than a random encoder really is.
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
def _embedding_picture(pretrain: VistraCLI, baseline: VistraCLI, path: Path) -> Path:
    from vistra.visualize import embedding_scatter

    datamodule = pretrain.datamodule
    loader = datamodule.eval_loader(datamodule.val_source)
    panels = []
    for title, network in (
        ("random encoder (BN statistics measured)", baseline.model.network),
        ("SupCon encoder", pretrain.model.network),
    ):
        network.eval()
        features, labels = zip(*[(network.forward_features(x), y) for x, y in loader])
        panels.append((title, torch.cat(features), torch.cat(labels)))
    return embedding_scatter(panels, datamodule.classes, path)
