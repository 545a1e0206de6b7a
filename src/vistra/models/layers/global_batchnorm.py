"""BatchNorm whose training statistics cover the images of every process.

SimCLR and SupCon normalise over the global batch ("global BN"): with per-process statistics
the network can tell which process an image sits on and shortcut the contrastive task. Torch's
``SyncBatchNorm`` does this on accelerators only; this one works on any device and backend
(gloo too), so a CPU run at any world size equals the one-process run on the same images.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor, nn


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Drop-in for ``nn.BatchNorm1d/2d/3d`` (same parameters and buffers, so checkpoints load
    into the plain layer). Outside training, or on one process, it is the plain layer."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not (self.training and distributed):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        local = torch.cat([x.float().sum(dims), x.new_tensor([x.numel() / x.shape[1]]).float()])
        total = dist_fn.all_reduce(local)  # differentiable: gradients reach every process
        count = total[-1]
        mean = total[:-1] / count
        centred = x.float() - mean.view(shape)
        var = dist_fn.all_reduce((centred * centred).sum(dims)) / count  # two passes: exact
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum  # None: a cumulative average, as nn.BatchNorm2d does
                if momentum is None:
                    momentum = 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean), momentum)
                unbiased = var.detach() * count / (count - 1).clamp(min=1)
                self.running_var.lerp_(unbiased.to(self.running_var), momentum)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


def use_global_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm of ``module`` replaced by a ``GlobalBatchNorm`` holding the same
    parameters and statistics (in place; returns ``module``)."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(
            child, GlobalBatchNorm
        ):
            place = next(child.buffers(), None)
            device = place.device if place is not None else None
            replacement = GlobalBatchNorm(child.num_features, child.eps, child.momentum,
                                          child.affine, child.track_running_stats,
                                          device=device)  # fmt: skip
            replacement.load_state_dict(child.state_dict())
            if child.affine:  # the same Parameter objects: an optimizer built already still works
                replacement.weight, replacement.bias = child.weight, child.bias
            setattr(module, name, replacement)
        else:
            use_global_batchnorm(child)
    return module
