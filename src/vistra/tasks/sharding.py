"""Fully sharded data parallel (FSDP2) for the ViT tasks, under ``--trainer.strategy
fsdp_blocks`` (registered with Lightning by ``register_strategy``).

Weights, gradients and optimizer states are split across the processes one Transformer block
at a time; a block's full weights exist only while it runs. The checkpoint is gathered into
one file on rank 0, so it loads without the strategy (``vistra predict``, ``Predictor``,
fine-tuning from it).
"""

from __future__ import annotations

from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn

from vistra.models.layers.vit import transformer_blocks


class ShardedViT(ModelParallelStrategy):
    """Lightning's ``ModelParallelStrategy`` as plain FSDP: every process a data-parallel
    rank (no tensor parallelism), the checkpoint written whole.

    Args:
        save_distributed_checkpoint: write one shard file per process instead (for models
            whose whole state does not fit one process's memory).
    """

    def __init__(self, save_distributed_checkpoint: bool = False, **kwargs) -> None:
        kwargs.setdefault("tensor_parallel_size", 1)
        super().__init__(save_distributed_checkpoint=save_distributed_checkpoint, **kwargs)

    def setup_environment(self) -> None:
        # Lightning's "auto" makes each node one data-parallel rank (tensor parallelism inside
        # a node); here every process is one.
        if self._data_parallel_size == "auto":
            self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()


def shard_by_block(network: nn.Module, mesh, methods: tuple[str, ...] = ()) -> None:
    """``fully_shard`` every Transformer block of ``network`` (those of ``called_blocks()``
    when it says which blocks run only through their ``forward``), then the rest of it.

    Args:
        mesh: the data-parallel device mesh.
        methods: entry points besides ``forward`` that the task calls on ``network`` (FSDP
            gathers the root's weights around them too).
    """
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    blocks = network.called_blocks() if hasattr(network, "called_blocks") else None
    for block in blocks if blocks is not None else transformer_blocks(network):
        fully_shard(block, mesh=mesh)
    fully_shard(network, mesh=mesh)
    for method in methods:
        register_fsdp_forward_method(network, method)


class ShardableViT:
    """Mixin for the ViT tasks: shard ``self.network`` when the strategy provides a device
    mesh (``ShardedViT``); any other strategy leaves the model as it is."""

    sharded_methods: tuple[str, ...] = ()

    def configure_model(self) -> None:
        mesh = self.device_mesh
        if mesh is None or getattr(self, "_sharded", False):
            return
        shard_by_block(self.network, mesh["data_parallel"], self.sharded_methods)
        self._sharded = True


STRATEGY_NAME = "fsdp_blocks"


def register_strategy() -> None:
    """Make ``--trainer.strategy fsdp_blocks`` name ``ShardedViT``."""
    from lightning.pytorch.strategies import StrategyRegistry

    if STRATEGY_NAME not in StrategyRegistry:
        StrategyRegistry.register(STRATEGY_NAME, ShardedViT,
                                  description="FSDP2, one shard unit per ViT block")  # fmt: skip
