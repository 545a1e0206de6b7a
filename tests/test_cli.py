"""The ``vistra`` command: its options and messages (in this process, ``runner``), the
installed script once per subcommand (a subprocess of ``.venv/bin/vistra``), and what its
start-up imports (a fresh interpreter)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from families import family_args
from PIL import Image
from runner import run_script

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "supcon"
TINY = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.enable_progress_bar=false",
    "--data.init_args.image_size=16",
    "--data.init_args.batch_size=32",
]


def subcommands(family_data: Path, trained, out: Path) -> dict[str, list]:
    """One real run of each subcommand, as small as it gets."""
    config, args, _ = family_args(family_data, "supcon")
    supcon, images = trained("supcon"), family_data / "shapes/images/val"
    return {
        "fit": ["fit", "--config", CONFIGS / "resnet18_digits.yaml", *TINY],
        "validate": ["validate", "--config", config, *args, "--ckpt_path", supcon],
        "test": ["test", "--config", config, *args, "--ckpt_path", supcon],
        "predict": ["predict", "--ckpt", trained("detr"), "--input", images, "--output", out],
        "export": ["export", "--ckpt", supcon, "--format", "onnx", "--output", out / "m.onnx"],
        "data": ["data", "shapes", out / "shapes", "--train", "2", "--val", "1", "--size", "32"],
    }


# `vistra demo` runs through the script in the README test (the quick start's `make demo`).
COMMANDS = ("fit", "validate", "test", "predict", "export", "data")


@pytest.mark.parametrize("command", COMMANDS)
def test_the_installed_script_runs_each_subcommand(command, family_data, trained, tmp_path):
    done = run_script(*subcommands(family_data, trained, tmp_path)[command], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr


def test_print_config_resolves_the_yaml(vistra, tmp_path):
    result = vistra("fit", "--config", CONFIGS / "resnet18_digits.yaml", "--print_config",
                    cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "vistra.models.SupConModel" in result.stdout and "temperature: 0.1" in result.stdout


def test_misspelt_key_is_named(vistra, tmp_path):
    result = vistra("fit", "--config", CONFIGS / "resnet18_digits.yaml",
                    "--model.init_args.tempurature=0.2", cwd=tmp_path)  # fmt: skip
    assert result.returncode != 0
    assert "tempurature" in result.stderr


def test_wrong_type_is_named(vistra, tmp_path):
    result = vistra("fit", "--config", CONFIGS / "resnet18_digits.yaml",
                    "--data.init_args.batch_size=many", cwd=tmp_path)  # fmt: skip
    assert result.returncode != 0
    assert "batch_size" in result.stderr


def test_unknown_demo(vistra, tmp_path):
    result = vistra("demo", "nonsense", cwd=tmp_path)
    assert result.returncode != 0 and "unknown demo" in result.stderr


@pytest.mark.parametrize(
    "config", sorted((CONFIGS.parent).rglob("*.yaml")), ids=lambda path: path.name
)
def test_every_shipped_config_parses(config, capsys):
    from vistra.cli import VistraCLI

    with pytest.raises(SystemExit) as exit_info:
        VistraCLI(args=["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "class_path: vistra.tasks." in capsys.readouterr().out


def test_help_lists_every_command_and_both_predict_forms(vistra, tmp_path):
    overview = vistra("--help", cwd=tmp_path)
    assert overview.returncode == 0
    listed = {line.split()[0] for line in overview.stdout.splitlines() if line.startswith("  ")}
    assert {"fit", "validate", "test", "predict", "export", "data", "demo"} <= listed
    predict = vistra("predict", "--help", cwd=tmp_path)
    assert predict.returncode == 0
    assert "--ckpt CKPT" in predict.stdout and "--ckpt_path CKPT" in predict.stdout
    assert "--threshold" in predict.stdout and "--config FILE.yaml" in predict.stdout
    assert "mask2former" in vistra("demo", "--help", cwd=tmp_path).stdout


def test_help_does_not_import_lightning():
    code = "import sys; from vistra.cli import main; main(['--help']); main(['predict', '--help']);"
    code += "print('lightning' in sys.modules, 'torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip().splitlines()[-1] == "False False", result.stderr[-2000:]


def test_inference_from_a_checkpoint_imports_its_family_only(tmp_path):
    """``vistra predict --ckpt`` runs without the training stack: reading images, building the
    network from the checkpoint, predicting and writing results import no Lightning, no loss
    (scipy) and no other family's model."""
    from vistra.inference.checkpoint import NETWORK_KEY, network_spec
    from vistra.inference.spec import PREPROCESS_KEY
    from vistra.models import DETR

    network = DETR(2, backbone="resnet18", hidden_dim=32, num_encoder_layers=1,
                   num_decoder_layers=1, ffn_dim=64, num_queries=3)  # fmt: skip
    torch.save({NETWORK_KEY: network_spec(network),
                PREPROCESS_KEY: {"resize": "shorter_side", "size": 64, "max_size": 96},
                "state_dict": {f"network.{k}": v for k, v in network.state_dict().items()}},
               tmp_path / "detr.ckpt")  # fmt: skip
    Image.new("RGB", (80, 60), (30, 90, 160)).save(tmp_path / "photo.png")
    code = ("import sys; from vistra.cli import main\n"
            "try:\n"
            f"    main(['predict', '--ckpt', r'{tmp_path / 'detr.ckpt'}', '--input',"
            f" r'{tmp_path / 'photo.png'}', '--output', r'{tmp_path / 'out'}'])\n"
            "except SystemExit as done:\n"
            "    assert not done.code, done.code\n"
            "others = ('vistra.models.mask2former', 'vistra.models.mae', 'vistra.models.supcon',\n"
            "          'vistra.models.vit_classifier', 'vistra.losses', 'scipy', 'lightning')\n"
            "print(sorted(m for m in others if m in sys.modules))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    # Only DETR's own module: not the other families, the losses (scipy) or Lightning.
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stderr[-2000:]
    assert (tmp_path / "out/detections.json").is_file()
