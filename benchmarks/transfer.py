"""Does pre-training on unlabelled images pay when few are labelled? Mask2Former and DETR on the
built-in shapes, from scratch against backbones pre-trained by vistra's own methods.

The demos' shapes sets (Mask2Former: 96 pixels; DETR: 64 pixels, at most 3 objects): all 2,000
training scenes, without labels, for pre-training; the first 200 (10%) with their labels for
fine-tuning; the 200 held-out scenes for scoring (Mask2Former: PQ and things PQ; DETR: box
AP50). Each method runs through ``vistra fit`` with the demo's config (``configs/*/shapes.yaml``)
and only the backbone changed:

- ``scratch``: the demo's CNN (LCNet) from random weights;
- ``scratch ViT``: ViT-tiny (6 blocks, 8-pixel patches) with ViTDet's pyramid, random;
- ``MAE ViT``: the same ViT from MAE pre-training on the 2,000 unlabelled scenes;
- ``SimCLR CNN``: the demo's CNN from SimCLR (two views, no labels) on the 2,000 scenes;
- ``box-map CNN`` (DETR only): the demo's first stage, on the 200 labelled scenes.

Every fine-tuning run gets the same budget of training minutes (steps from a timed calibration
of 6 steps; the learning-rate schedule ends with the budget) and is scored every few epochs;
the pre-training minutes are reported beside it. The curves (held-out metric against
fine-tuning minutes) go to ``benchmarks/plots/transfer.png``, the numbers to ``--out``.

Run: .venv/bin/python benchmarks/transfer.py [--minutes 4] [--families mask2former detr]
(about 75 minutes on 2 cores with the defaults; ``--quick`` checks the route in a few minutes).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import lightning as L
from common import line_chart

from vistra.data.shapes import write_shapes
from vistra.engine.lightning_cli import VistraCLI
from vistra.engine.time_budget import time_budget

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NET = "--model.init_args.network.init_args."
LABELLED = 200
VIT = "{depth: 6, patch_size: 8, pretrain_image_size: SIZE, image_size: SIZE, window_size: 4}"
FAMILIES = {
    "mask2former": dict(size=96, max_objects=3, config="mask2former/shapes.yaml", cnn="lcnet_100",
                        metric="PQ", also="PQ_th", stage=None),
    "detr": dict(size=64, max_objects=3, config="detr/shapes.yaml", cnn="lcnet_050",
                 metric="AP50", also="AP", stage=2),
}  # fmt: skip


class Curve(L.Callback):
    """Held-out metrics at each validation against the fit's training minutes (loading and
    steps; evaluations left out), and the seconds of each training step."""

    def __init__(self) -> None:
        self.points: list[dict] = []
        self.step_seconds: list[float] = []
        self._started = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.step_seconds.append(time.perf_counter() - self._started)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        split = time_budget(trainer).split()
        metrics = getattr(pl_module, "last_metrics", None) or getattr(
            pl_module, "last_coco_stats", {}
        )
        self.points.append({"minutes": (split["training"] + split["data"]) / 60,
                            "step": trainer.global_step, **metrics})  # fmt: skip


def fit(*args: str) -> VistraCLI:
    return VistraCLI(args=["fit", *map(str, args), "--trainer.callbacks+=transfer.Curve",
                           "--trainer.enable_progress_bar=false"])  # fmt: skip


def curve_of(cli: VistraCLI) -> Curve:
    return next(c for c in cli.trainer.callbacks if type(c).__name__ == "Curve")


def labelled_subset(root: Path, family: str) -> dict:
    """The first ``LABELLED`` training scenes' annotations (COCO instances, and the panoptic
    JSON with its PNGs for Mask2Former), written beside the full files."""
    annotations = root / "annotations"
    written = {}
    for kind in ("instances", "panoptic") if family == "mask2former" else ("instances",):
        data = json.loads((annotations / f"{kind}_train.json").read_text())
        data["images"] = data["images"][:LABELLED]
        kept = {image["id"] for image in data["images"]}
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] in kept]
        target = annotations / f"{kind}_train{LABELLED}.json"
        target.write_text(json.dumps(data))
        if kind == "panoptic":
            pngs = target.with_suffix("")
            pngs.mkdir(exist_ok=True)
            for entry in data["annotations"]:
                shutil.copy(annotations / "panoptic_train" / entry["file_name"], pngs)
        written[kind] = target
    return written


def data_args(root: Path, family: str, subset: dict) -> list[str]:
    kind = "panoptic" if family == "mask2former" else "instances"
    args = ["--data.init_args.train_annotations", subset[kind],
            "--data.init_args.train_images", root / "images/train",
            "--data.init_args.val_annotations", root / f"annotations/{kind}_val.json",
            "--data.init_args.val_images", root / "images/val"]  # fmt: skip
    if family == "mask2former":
        args += ["--data.init_args.val_instances", root / "annotations/instances_val.json"]
    return args


def unlabelled(root: Path) -> str:
    return json.dumps({"class_path": "vistra.data.UnlabelledFolderSource",
                       "init_args": {"root": str(root / "images/train")}})  # fmt: skip


def pretrain_mae(root: Path, size: int, out: Path, epochs: int) -> tuple[str, float]:
    started = time.perf_counter()
    cli = fit("--config", CONFIGS / "mae/vit_tiny_digits.yaml", "--trainer.default_root_dir", out,
              f"--trainer.max_epochs={epochs}", "--trainer.limit_val_batches=0",
              f"{NET}depth=6", f"{NET}image_size={size}", f"{NET}patch_size=8",
              f"--data.init_args.train={unlabelled(root)}", "--data.init_args.val=null",
              "--data.init_args.knn_bank=false", f"--data.init_args.image_size={size}",
              "--data.init_args.batch_size=64", "--data.init_args.horizontal_flip=true",
              "--model.init_args.pictures=0")  # fmt: skip
    return cli.trainer.checkpoint_callback.last_model_path, time.perf_counter() - started


def pretrain_simclr(root: Path, size: int, cnn: str, out: Path, epochs: int) -> tuple[str, float]:
    started = time.perf_counter()
    cli = fit("--config", CONFIGS / "supcon/resnet18_digits.yaml",
              "--trainer.default_root_dir", out, f"--trainer.max_epochs={epochs}",
              "--trainer.limit_val_batches=0", f"{NET}encoder={cnn}",
              f"--data.init_args.train={unlabelled(root)}", "--data.init_args.val=null",
              "--data.init_args.knn_bank=false", f"--data.init_args.image_size={size}",
              "--data.init_args.batch_size=64", "--data.init_args.horizontal_flip=true",
              "--data.init_args.crop_scale=[0.3, 1.0]")  # fmt: skip
    return cli.trainer.checkpoint_callback.last_model_path, time.perf_counter() - started


def pretrain_box_maps(root: Path, subset: dict, out: Path, epochs: int) -> tuple[str, float]:
    started = time.perf_counter()
    backbone = out / "backbone.pt"
    fit("--config", CONFIGS / "detr/shapes_backbone.yaml", "--trainer.default_root_dir", out,
        f"--trainer.max_epochs={epochs}", "--model.init_args.backbone_out", backbone,
        *data_args(root, "detr", subset))  # fmt: skip
    return str(backbone), time.perf_counter() - started


def fine_tune(family: str, root: Path, subset: dict, out: Path, minutes: float, backbone: list,
              evaluations: int) -> dict:  # fmt: skip
    """Calibrate the seconds per step, then fine-tune for ``minutes`` of training."""
    spec = FAMILIES[family]
    common = ["--config", CONFIGS / spec["config"], *data_args(root, family, subset), *backbone]
    probe = fit(*common, "--trainer.default_root_dir", out / "calibration",
                "--trainer.max_steps=6", "--trainer.limit_val_batches=0")  # fmt: skip
    per_step = sorted(curve_of(probe).step_seconds[1:])[2]  # the median of steps 2-6
    steps = max(int(minutes * 60 / per_step), 10)
    batches = len(probe.datamodule.train_dataloader())
    every = max(round(steps / batches / evaluations), 1)
    cli = fit(
        *common,
        "--trainer.default_root_dir",
        out,
        "--trainer.max_epochs=-1",
        f"--trainer.max_steps={steps}",
        f"--trainer.check_val_every_n_epoch={every}",
    )
    curve = curve_of(cli)
    if not curve.points or curve.points[-1]["step"] != cli.trainer.global_step:
        cli.trainer.validate(cli.model, datamodule=cli.datamodule)
    metric, also = spec["metric"], spec["also"]
    points = [{"minutes": p["minutes"], metric: p.get(metric, 0.0), also: p.get(also, 0.0)}
              for p in curve.points]  # fmt: skip
    return {"steps": steps, "seconds_per_step": per_step, "points": points}


def vit_backbone(size: int, stage: int | None, checkpoint: str | None) -> list[str]:
    args = [f"{NET}backbone=vit_tiny", f"{NET}backbone_options={VIT.replace('SIZE', str(size))}",
            "--model.init_args.layer_decay=" + ("0.75" if checkpoint else "1.0")]  # fmt: skip
    if stage is not None:
        args.append(f"{NET}backbone_stage={stage}")
    else:  # Mask2Former: one rate for all, half the demo's (the small CNN's) for a ViT
        args += ["--model.init_args.backbone_multiplier=1.0", "--model.init_args.lr=1.0e-3"]
    return args + ([f"{NET}backbone_checkpoint={checkpoint}"] if checkpoint else [])


def run_family(family: str, out: Path, minutes: float, epochs: dict, evaluations: int) -> dict:
    spec = FAMILIES[family]
    size, stage = spec["size"], spec["stage"]
    root = out / family / "shapes"
    if not (root / "annotations/instances_val.json").is_file():
        write_shapes(root, train=2000, val=200, size=size, seed=0,
                     max_objects=spec["max_objects"])  # fmt: skip
    subset = labelled_subset(root, family)
    runs = out / family
    mae, mae_seconds = pretrain_mae(root, size, runs / "mae", epochs["mae"])
    simclr, simclr_seconds = pretrain_simclr(root, size, spec["cnn"], runs / "simclr",
                                             epochs["simclr"])  # fmt: skip
    methods = {
        "scratch": ([], 0.0),
        "scratch ViT": (vit_backbone(size, stage, None), 0.0),
        "MAE ViT": (vit_backbone(size, stage, mae), mae_seconds),
        "SimCLR CNN": ([f"{NET}backbone_checkpoint={simclr}"], simclr_seconds),
    }
    if family == "detr":
        box_maps, box_seconds = pretrain_box_maps(root, subset, runs / "box_maps",
                                                  epochs["box_maps"])  # fmt: skip
        methods["box-map CNN"] = ([f"{NET}backbone_checkpoint={box_maps}"], box_seconds)
    results = {}
    for name, (backbone, pretrain_seconds) in methods.items():
        folder = runs / name.replace(" ", "_")
        result = fine_tune(family, root, subset, folder, minutes, backbone, evaluations)
        results[name] = {**result, "pretrain_minutes": pretrain_seconds / 60}
        print(f"{family} {name}: {result['points'][-1]}", flush=True)
    return results


def plot(results: dict, path: Path) -> None:
    panels = []
    for family, methods in results.items():
        metric = FAMILIES[family]["metric"]
        lines = []
        for name, run in methods.items():
            pre = run["pretrain_minutes"]
            label = f"{name} (+{pre:.0f} min pre-training)" if pre else name
            lines.append((label, [0.0] + [p["minutes"] for p in run["points"]],
                          [0.0] + [p[metric] for p in run["points"]]))  # fmt: skip
        title = {"mask2former": "Mask2Former", "detr": "DETR"}[family]
        panels.append({"title": f"{title}: held-out {metric} (200 scenes), 200 labelled",
                       "x_label": "fine-tuning minutes, 2 CPU cores", "lines": lines})  # fmt: skip
    print(f"picture: {line_chart(panels, path)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--minutes", type=float, default=4.0, help="fine-tuning budget per run")
    parser.add_argument("--mae-epochs", type=int, default=30)
    parser.add_argument("--simclr-epochs", type=int, default=15)
    parser.add_argument("--box-map-epochs", type=int, default=150)
    parser.add_argument("--evaluations", type=int, default=5, help="scorings per fine-tuning")
    parser.add_argument("--out", default="vistra_runs/transfer")
    parser.add_argument("--quick", action="store_true", help="tiny budgets: check the route")
    options = parser.parse_args()
    epochs = {"mae": options.mae_epochs, "simclr": options.simclr_epochs,
              "box_maps": options.box_map_epochs}  # fmt: skip
    minutes = options.minutes
    if options.quick:
        epochs, minutes = {"mae": 1, "simclr": 1, "box_maps": 1}, 0.2
    out = Path(options.out)
    results = {family: run_family(family, out, minutes, epochs, options.evaluations)
               for family in options.families}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    picture = Path(__file__).parent / "plots" / ("transfer_quick.png" if options.quick
                                                 else "transfer.png")  # fmt: skip
    plot(results, picture)
    for family, methods in results.items():
        metric, also = FAMILIES[family]["metric"], FAMILIES[family]["also"]
        print(f"\n{family}: held-out {metric} / {also} after {minutes} fine-tuning minutes")
        for name, run in methods.items():
            last = run["points"][-1]
            print(
                f"  {name:<14}{last[metric]:.3f} / {last[also]:.3f}   pre-training "
                f"{run['pretrain_minutes']:.1f} min, {run['steps']} fine-tuning steps"
            )


if __name__ == "__main__":
    main()
