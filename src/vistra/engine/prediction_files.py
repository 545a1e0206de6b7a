"""``vistra predict --config ... --ckpt_path ...`` writes the files ``vistra predict --ckpt``
writes: the task's ``predict_step`` gives the results (``vistra.inference``), this callback
hands them to the same writers."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import BasePredictionWriter

from vistra.inference.images import output_stems


class PredictionFiles(BasePredictionWriter):
    """Write a prediction run's results files.

    Args:
        output: folder for the files (default: ``<run directory>/predictions``).
        threshold: detections scoring at least this are drawn (default: the model's, 0.5).
    """

    def __init__(self, output: str | None = None, threshold: float | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output, self.threshold = output, threshold
        self.writer, self.folder = None, None

    def on_predict_start(self, trainer, pl_module) -> None:
        # The files hold the results: Lightning need not keep every map in memory as well.
        trainer.predict_loop.return_predictions = False

    def on_predict_epoch_start(self, trainer, pl_module) -> None:
        from vistra.inference.files import writer_for

        if trainer.world_size > 1:
            raise ValueError("vistra predict --config writes its files from one process: run it "
                             "with --trainer.devices 1")  # fmt: skip
        loader = trainer.predict_dataloaders
        loader = loader[0] if isinstance(loader, (list, tuple)) else loader
        self.source = loader.dataset.source
        self.stems = output_stems([self.source.item_name(i) for i in range(len(self.source))])
        self.folder = Path(self.output or Path(trainer.log_dir or trainer.default_root_dir)
                           / "predictions")  # fmt: skip
        self.writer = writer_for(pl_module.inference_spec(), self.folder, self.threshold,
                                 pl_module.network)  # fmt: skip

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx) -> None:  # fmt: skip
        from vistra.inference.writers import ImageRecord

        for index, result in zip(batch_indices, prediction):
            name = self.source.item_name(index)
            record = ImageRecord(name, self.stems[name], self.source.item_id(index),
                                 self.source.picture(index))  # fmt: skip
            self.writer.add(record, result)

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        if self.writer is None:
            return
        self.writer.close()
        print(f"wrote {self.folder} ({len(self.writer.images)} images)")
        self.writer = None
