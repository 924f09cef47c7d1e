"""InstanceNorm that keeps the memory format, so channels_last_3d convolutions run back to back.

`nn.InstanceNorm3d` reshapes its input to a contiguous (1, N·C, …) view for batch_norm, which turns every
channels_last_3d tensor back into NCDHW and makes the next oneDNN conv convert it again. Instance norm is group
norm with one channel per group, and PyTorch's group_norm kernel has a channels-last path (faster in NCDHW too).
Subclassing keeps the module name and the state_dict keys (weight, bias), so existing checkpoints load unchanged.

PyTorch's channels-last group_norm *backward* is slow at the narrow widths of the full-resolution stage.
`ChannelsLastInstanceNorm` keeps its forward and computes the gradient itself: the two per-channel sums it needs
(Σdy, Σdy·x) are batched matrix products over the (N, voxels, C) view, which oneDNN's GEMM reads at memory speed,
and dx is two fused multiply-adds. Timings: docs/dev/cpu-performance.md (`benchmarks/layer_kernels.py`, rows `norm
torch` / `norm medseg`).
"""

import torch
from torch import nn
from torch.nn import functional as F

from medseg import compat
from medseg.ops import fast_paths_enabled


def voxel_rows(x: torch.Tensor) -> torch.Tensor:
    """(N, C, D, H, W) channels-last → its (N, D·H·W, C) view (no copy)."""
    return x.permute(0, 2, 3, 4, 1).reshape(x.shape[0], -1, x.shape[1])


def channel_sums(rows: torch.Tensor, other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (sample, channel): Σ rows and Σ rows·other over the voxels, both (N, C)."""
    dot = torch.diagonal(torch.bmm(rows.transpose(1, 2), other), dim1=1, dim2=2)  # diag of (N, C, C)
    return column_sums(rows), dot


def column_sums(rows: torch.Tensor) -> torch.Tensor:
    """Σ over the voxels of a (N, V, C) view, (N, C): a GEMM with ones (a strided reduction is several times
    slower at narrow C)."""
    return torch.bmm(rows.new_ones(rows.shape[0], 1, rows.shape[1]), rows)[:, 0]  # (N, 1, V) @ (N, V, C)


class ChannelsLastInstanceNorm(torch.autograd.Function):
    """Instance norm of a channels_last_3d tensor: group_norm's forward, a GEMM-based backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                eps: float) -> torch.Tensor:
        n, c = x.shape[:2]
        y, mean, rstd = compat.native_group_norm(x, weight, bias, n, c, x[0, 0].numel(), c, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy: torch.Tensor) -> tuple:
        x, weight, mean, rstd = ctx.saved_tensors  # mean, rstd: (N, C)
        n, c = x.shape[:2]
        dy = dy.contiguous(memory_format=torch.channels_last_3d)
        voxels = x[0, 0].numel()
        sum_dy, sum_dy_x = channel_sums(voxel_rows(dy), voxel_rows(x))
        sum_dy_xhat = (sum_dy_x - mean * sum_dy) * rstd  # Σ dy·x̂, x̂ = (x − mean)·rstd
        gain = rstd if weight is None else rstd * weight
        # dx = gain·(dy − Σdy/V − x̂·Σdy·x̂/V) = gain·dy + slope·x + offset, per (sample, channel)
        slope = -gain * rstd * sum_dy_xhat / voxels
        offset = -gain * sum_dy / voxels - slope * mean
        per_channel = (n, c, 1, 1, 1)
        dx = torch.addcmul(offset.view(per_channel), x, slope.view(per_channel), out=torch.empty_like(x))
        dx.addcmul_(dy, gain.view(per_channel))
        if weight is None:
            return dx, None, None, None
        return dx, sum_dy_xhat.sum(0), sum_dy.sum(0), None


def cpu_channels_last(x: torch.Tensor) -> bool:
    """A float32 channels_last_3d CPU tensor with more than one channel, outside autocast: where the GEMM-based
    paths apply (under bfloat16 autocast torch's own kernels run)."""
    return (fast_paths_enabled() and x.is_cpu and x.dtype == torch.float32 and x.dim() == 5 and x.shape[1] > 1
            and x.is_contiguous(memory_format=torch.channels_last_3d) and not torch.is_autocast_enabled("cpu"))


def plain(x: torch.Tensor) -> torch.Tensor:
    """x as a plain tensor: a subclass (MONAI's MetaTensor) would wrap a custom Function's output in a view, and
    the in-place activation after it is then refused by autograd."""
    return x if type(x) is torch.Tensor else x.as_subclass(torch.Tensor)


def fast_backward(x: torch.Tensor) -> bool:
    """Training on a `cpu_channels_last` tensor: where PyTorch's own backward was measured slow (the norm here,
    the depthwise conv in `medseg.ops.depthwise`)."""
    return torch.is_grad_enabled() and cpu_channels_last(x)


class InstanceNorm3d(nn.InstanceNorm3d):
    """`nn.InstanceNorm3d` computed by group_norm (one group per channel): same outputs, layout kept."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.track_running_stats or x.dim() != 5 or not fast_paths_enabled():
            return super().forward(x)  # running statistics, unbatched input, fast paths off: torch's own path
        if fast_backward(x):
            return ChannelsLastInstanceNorm.apply(plain(x), self.weight, self.bias, self.eps)
        return F.group_norm(x, x.shape[1], self.weight, self.bias, self.eps)
