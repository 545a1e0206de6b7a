"""Every classifying task checks, before the first step, that its class count is the data's."""

from __future__ import annotations

from vistra.engine.classes import check_against_data

NOT_SET = (
    "num_classes is not set: give it, or train with `vistra fit`, which takes it from the data"
)


class ClassCountCheck:
    """Mixin for LightningModules: ``setup`` compares ``configured_classes()`` with the data
    module's ``classes`` and raises ``ClassCountError`` naming both and the file."""

    def configured_classes(self) -> int | None:
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        where = f"{type(self).__name__} num_classes"
        check_against_data(self.configured_classes(), datamodule, where)
