"""A conv whose kernel is built from parameters on every call (CAKES's zero-padded sub-kernels), without keeping
the built kernel for the backward.

Under autograd a built kernel is a new tensor that the conv saves until the backward: across a UNet that is a
second copy of a dense conv net's weights. Here the backward builds it again from the parameters (small tensors),
so the training step keeps what a plain conv keeps: its input. CPU float32 only (where it was measured);
elsewhere, and under autocast, the plain `F.conv3d`. PmSCn's fused layers build theirs too but are narrow, where
the memory saved did not pay for the rebuild, and they keep the plain path. Measurements: docs/dev/cpu-performance.md
(`benchmarks/live_tensor_peak.py`).
"""

from collections.abc import Callable

import torch
from torch.nn import functional as F

from medseg import compat
from medseg.ops import fast_paths_enabled

conv_backward = compat.convolution_backward

Build = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]  # parameters -> (weight, bias or None)


def built_conv3d(x: torch.Tensor, build: Build, params: list[torch.Tensor], stride: tuple,
                 padding: tuple) -> torch.Tensor:
    """F.conv3d(x, *build(*params), stride, padding), the kernel rebuilt in the backward instead of kept."""
    training = torch.is_grad_enabled() and any(t.requires_grad for t in (x, *params))
    if (not training or not fast_paths_enabled() or not x.is_cpu or x.dtype != torch.float32
            or torch.is_autocast_enabled("cpu")):
        return F.conv3d(x, *build(*params), stride, padding)
    return BuiltKernelConv.apply(x, build, stride, padding, *params)


class BuiltKernelConv(torch.autograd.Function):
    """`built_conv3d` with a gradient: the conv's own backward for dx and the kernel's gradient, then autograd
    through `build` (a few small ops) to the parameters."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, build: Build, stride: tuple, padding: tuple,
                *params: torch.Tensor) -> torch.Tensor:
        weight, bias = build(*params)
        ctx.save_for_backward(x, *params)
        ctx.build, ctx.conf = build, (stride, padding)
        return F.conv3d(x, weight, bias, stride, padding)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy: torch.Tensor) -> tuple:
        x, *params = ctx.saved_tensors
        stride, padding = ctx.conf
        with torch.enable_grad():
            leaves = [p.detach().requires_grad_() for p in params]
            weight, bias = ctx.build(*leaves)
        needs_params = any(ctx.needs_input_grad[4:])
        dx, d_weight, d_bias = conv_backward(dy, x, weight.detach(), None if bias is None else [bias.shape[0]],
                                             stride, padding, [1, 1, 1], False, [0, 0, 0], 1,
                                             [ctx.needs_input_grad[0], needs_params, needs_params and bias is not None])
        grads = [None] * len(params)
        if needs_params:
            outputs, given = ([weight], [d_weight]) if bias is None else ([weight, bias], [d_weight, d_bias])
            grads = torch.autograd.grad(outputs, leaves, given, allow_unused=True)
        return dx, None, None, None, *grads
