"""``VistraCLI``: Lightning's ``LightningCLI`` with what the ``vistra`` command promises.

- the data module is built first; ``num_classes`` left out of the model is taken from it, and
  one that contradicts it stops the run with both numbers and the file (``engine.classes``);
- ``--ckpt_path last`` finds the newest run's ``last.ckpt`` and ``fit`` continues that run's
  directory (``engine.resume``); checkpoints are written atomically;
- CSV and TensorBoard logs in one run directory, a progress bar with real totals, a parameter
  count and a closing summary (``engine.callbacks``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningCLI

from vistra.convert.files import CheckpointMismatchError
from vistra.convert.safe import UnsafeFileError, load_torch_file
from vistra.engine.callbacks import (
    AtomicCheckpointIO,
    FinalCheckpoint,
    ParameterCount,
    RunSummary,
    progress_bar,
)
from vistra.engine.checkpoint_data import checked_hyper_parameters
from vistra.engine.classes import ClassCountError, data_classes, fill_num_classes
from vistra.engine.finite import StopOnNonFinite
from vistra.engine.loggers import RUNS_FOLDER, next_version, run_loggers
from vistra.engine.prediction_files import PredictionFiles
from vistra.engine.preemption import StopOnSignal
from vistra.engine.resume import newest_resumable_run, run_of_checkpoint
from vistra.engine.run_length import RunLength
from vistra.engine.run_lock import RunLock
from vistra.engine.seeding import StepSeeding
from vistra.engine.step_logging import LogEveryEpoch
from vistra.engine.time_budget import TimeBudget
from vistra.inference.checkpoint import VISTRA_NETWORKS, check_shapes, vistra_network
from vistra.tasks.sharding import register_strategy

# Without an interval, Lightning writes a checkpoint only after validation, which long runs do
# rarely: a kill in between would lose everything since. Configs may set their own.
CHECKPOINT_EVERY_N_STEPS = 500


class VistraCLI(LightningCLI):
    """``vistra fit|validate|test|predict --config FILE.yaml [--key=value ...]``."""

    def __init__(self, *args, **kwargs) -> None:
        register_strategy()
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        self.continued_run = None
        given = kwargs.get("args")
        self.given_args = [str(a) for a in given] if isinstance(given, list) else sys.argv[1:]
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(PredictionFiles, "predictions")
        parser.set_defaults({"checkpoint.save_last": True,
                             "checkpoint.every_n_train_steps": CHECKPOINT_EVERY_N_STEPS,
                             # a resumed run writes its own last.ckpt, never last-v1.ckpt
                             "checkpoint.enable_version_counter": False,
                             "trainer.enable_model_summary": False})  # fmt: skip

    # -- a checkpoint's hyper-parameters ----------------------------------------------------

    def _parse_ckpt_path(self) -> None:
        """Lightning's merge of the checkpoint's task hyper-parameters into the config, reading
        the file as data and accepting only vistra's tasks as its class (a checkpoint must not
        choose what code is imported)."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        try:
            checkpoint = load_torch_file(ckpt_path)
        except UnsafeFileError:
            raise
        except Exception as error:  # noqa: BLE001 - truncated, TorchScript, not a checkpoint
            text = str(error).strip()
            reason = text.splitlines()[0][:200] if text else type(error).__name__
            raise CheckpointMismatchError(f"--ckpt_path {ckpt_path}: not a readable "
                                          f"checkpoint ({reason})") from None  # fmt: skip
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise CheckpointMismatchError(
                f"--ckpt_path {ckpt_path}: not a checkpoint of a vistra run (no training state); "
                "to start from a file of weights, give it to the model's 'checkpoint' option"
            )
        self.stored_shapes = (ckpt_path, {
            key[len("network."):]: tuple(value.shape)
            for key, value in checkpoint["state_dict"].items()
            if key.startswith("network.") and hasattr(value, "shape")
        })  # fmt: skip
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        hparams = checked_hyper_parameters(hparams, f"--ckpt_path {ckpt_path}")
        for path in model_overrides(self.given_args):  # the command line wins over the file
            drop_path(hparams, path)
        if not hparams:
            return
        if "_class_path" in hparams:
            class_path = str(hparams.pop("_class_path"))
            if not class_path.startswith("vistra.tasks."):
                raise UnsafeFileError(f"{ckpt_path}: the checkpoint names the task {class_path!r}, "
                                      "which is not one of vistra.tasks")  # fmt: skip
            self._check_same_task(ckpt_path, class_path, subcommand)
            hparams = {"class_path": class_path, "dict_kwargs": hparams}
        self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)

    def _check_same_task(self, ckpt_path: str, class_path: str, subcommand: str) -> None:
        """A checkpoint of one task given to another task's config: one line naming both."""
        model = self.config[subcommand].get("model")
        configured = model.get("class_path") if isinstance(model, Namespace) else None
        if configured and configured != class_path:
            raise CheckpointMismatchError(
                f"--ckpt_path {ckpt_path}: a checkpoint of {class_path.rsplit('.', 1)[-1]}, but "
                f"the config trains {configured.rsplit('.', 1)[-1]}: use that task's config, or "
                "give the weights to the model's 'checkpoint' option to start a new run from them"
            )

    # -- classes from the data, resume -------------------------------------------------------

    def instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        datamodule = self._build_datamodule(config)
        self._check_stored_shapes(config)
        self._resolve_ckpt_path(config)
        reuse = [(lambda cls, *args, **kwargs: datamodule, LightningDataModule, True)]
        try:
            self.config_init = self.parser.instantiate(
                self.config, instantiators=reuse if datamodule is not None else None
            )
        except (ValueError, TypeError, OSError) as error:
            cause = own_error(error)
            if isinstance(cause, (ValueError, FileNotFoundError)) and cause is not error:
                sys.exit(f"vistra: {cause}")  # the model's own message, e.g. a checkpoint's
            raise
        self.datamodule = self._get(self.config_init, "data")
        self.model = self._get(self.config_init, "model")
        self._add_configure_optimizers_method_to_model(self.subcommand)
        self.trainer = self.instantiate_trainer()

    def _check_stored_shapes(self, config: Namespace) -> None:
        """The network the merged config asks for makes the shapes of ``--ckpt_path``'s
        weights, checked on the meta device before anything is allocated: another model size
        or class count, or stored arguments asking for more, stop in one line."""
        stored = getattr(self, "stored_shapes", None)
        model = config.get("model")
        network = model.get("init_args", {}).get("network") if model is not None else None
        if not stored or not stored[1] or not isinstance(network, Namespace):
            return
        spec = network.as_dict()
        name = str(spec.get("class_path", "")).rsplit(".", 1)[-1]  # vistra.models.DETR too
        found = [path for path in VISTRA_NETWORKS if path.rsplit(".", 1)[-1] == name]
        if not found:
            return
        init_args = {k: v for k, v in (spec.get("init_args") or {}).items() if k != "__path__"}
        try:
            check_shapes(vistra_network(found[0]), init_args, stored[1],
                         f"--ckpt_path {stored[0]}")  # fmt: skip
        except ValueError as error:
            raise CheckpointMismatchError(str(error)) from None

    def _build_datamodule(self, config: Namespace):
        """The data module alone (built once, reused), and the class count filled from it."""
        if config.get("data") is None:
            return None
        parser = self._parser(self.subcommand)
        try:
            datamodule = parser.instantiate(Namespace(data=config.data),
                                            instantiate_groups=False).data  # fmt: skip
        except (ValueError, FileNotFoundError, OSError) as error:
            sys.exit(f"vistra: {own_error(error)}")
        found = data_classes(datamodule)
        if found is not None and config.get("model") is not None:
            try:
                fill_num_classes(config.model, *found)
            except ClassCountError as error:
                sys.exit(f"vistra: {error}")
        return datamodule

    def _resolve_ckpt_path(self, config: Namespace) -> None:
        """``last`` -> the newest run's ``last.ckpt``; ``fit`` continues the run it belongs to."""
        ckpt_path = config.get("ckpt_path")
        if not ckpt_path:
            return
        root = os.path.abspath(self._trainer_setting(config, "default_root_dir") or ".")
        if ckpt_path == "last":
            found = newest_resumable_run(root)
            if found is None:
                print(f"vistra: no last.ckpt under {os.path.join(root, RUNS_FOLDER)}: "
                      "starting a new run", file=sys.stderr)  # fmt: skip
                config.ckpt_path = None
                return
            run, ckpt_path = found
            config.ckpt_path = str(ckpt_path)
        elif not os.path.isfile(ckpt_path):
            sys.exit(f"vistra: --ckpt_path {ckpt_path}: no such checkpoint file")
        else:
            run = run_of_checkpoint(ckpt_path)
        if self.subcommand == "fit":
            self.continued_run = run
            where = f" in {shown(run.path)}" if run is not None else ""
            print(f"vistra: resuming from {shown(config.ckpt_path)}{where}", file=sys.stderr)

    # -- trainer ------------------------------------------------------------------------------

    def instantiate_trainer(self, **kwargs):
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self._trainer_setting(config, "logger") in (None, True):
            run = self.continued_run
            # Absolute, so the checkpoint folder a resumed run records is the one it was
            # started with, however the run is named on the command line.
            root = os.path.abspath(self._trainer_setting(config, "default_root_dir") or ".")
            if run is not None and run.name == RUNS_FOLDER:
                kwargs["logger"] = run_loggers(run.save_dir, run.version)
            else:
                kwargs["logger"] = run_loggers(root, next_version(root))
        if not self._trainer_setting(config, "plugins"):
            kwargs["plugins"] = [AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)

    def _instantiate_trainer(self, config: dict, callbacks: list):
        callbacks = [*callbacks, RunLock(), RunLength(), LogEveryEpoch(), ParameterCount(),
                     FinalCheckpoint(), StopOnNonFinite(), StepSeeding(), StopOnSignal(),
                     TimeBudget()]  # fmt: skip
        chosen = config.get("callbacks") or []
        chosen = chosen if isinstance(chosen, list) else [chosen]
        has_bar = any(isinstance(callback, ProgressBar) for callback in chosen)
        if config.get("enable_progress_bar") is not False and not has_bar:
            callbacks.append(progress_bar())
        callbacks.append(RunSummary())  # after the bar: it prints once the bar has closed
        return super()._instantiate_trainer(config, callbacks)

    @staticmethod
    def _trainer_setting(config: Namespace, key: str):
        trainer = config.get("trainer")
        return trainer.get(key) if trainer is not None else None


def shown(path) -> str:
    """A path as the user would type it: relative when it is under the working folder."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def own_error(error: BaseException) -> BaseException:
    """The error a data module or model raised, out of jsonargparse's wrapping: it re-raises
    a constructor's error inside a listing of the config's types and values, which would bury
    the one line that names the file and field."""
    current = error
    while current is not None:
        frame = current.__traceback__
        while frame is not None and frame.tb_next is not None:
            frame = frame.tb_next
        if frame is None or "jsonargparse" not in frame.tb_frame.f_code.co_filename:
            return current
        current = current.__cause__ or current.__context__
    return error


def model_overrides(words: list[str]) -> list[list[str]]:
    """The ``--model...`` options given on the command line, as key paths without the
    ``init_args`` levels: ``--model.init_args.network.init_args.dropout=0`` -> ``[network,
    dropout]``."""
    paths = []
    for word in words:
        if word.startswith("--model."):
            keys = word[len("--model.") :].split("=", 1)[0].split(".")
            keys = [key for key in keys if key != "init_args"]
            if keys and keys[0] != "class_path":
                paths.append(keys)
    return paths


def drop_path(hparams: dict, path: list[str]) -> None:
    """Remove ``path`` from a checkpoint's hyper-parameters (nested class specs keep their
    arguments under ``init_args``), so that the command line's value is the one used."""
    node = hparams
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get("init_args"), dict):
            node = node["init_args"]
        if not isinstance(node, dict):
            return
    node.pop(path[-1], None)
