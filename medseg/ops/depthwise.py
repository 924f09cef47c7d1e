"""Depthwise Conv3d (one filter per channel) with a backward that oneDNN runs fast on channels-last CPU tensors.

oneDNN's depthwise backward is several times slower than its forward at the narrow, full-resolution layers of a
UNet, which made SIC's training step slower than a dense conv's. Both gradients have faster equivalents
(timings: docs/dev/cpu-performance.md; `benchmarks/layer_kernels.py`, rows `depthwise torch` / `depthwise medseg`):
  - input gradient, stride 1: the same depthwise conv run forward on dy with the kernel flipped;
  - weight gradient: the gradient of a block-diagonal grouped conv (blocks of up to 16 channels, the depthwise
    filters on the block diagonals), of which only the diagonal is kept.
Elsewhere (CUDA, other dtypes, no gradients) it is `nn.Conv3d`; the module and its state_dict are unchanged.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from medseg import compat
from medseg.ops.norm import fast_backward, plain

conv_backward = compat.convolution_backward


def block_size(channels: int) -> int:
    """Channels per block of the block-diagonal weight gradient: 16 where they divide evenly, else the largest
    common divisor with 16."""
    return math.gcd(channels, 16)


def depthwise_grads(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: tuple, padding: tuple,
                    needs: tuple[bool, bool]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(dx, dweight) of y = F.conv3d(x, weight, stride, padding, groups=C), each None where `needs` says so."""
    channels, block = x.shape[1], block_size(x.shape[1])
    dy = dy.contiguous(memory_format=torch.channels_last_3d)
    dx = dw = None
    if needs[0]:
        if all(s == 1 for s in stride) and all(k % 2 for k in weight.shape[2:]):  # dy keeps x's grid
            dx = F.conv3d(dy, weight.flip(2, 3, 4), None, 1, padding, groups=channels)
        else:
            dx = conv_backward(dy, x, weight, None, stride, padding, [1] * 3, False, [0] * 3, channels,
                               [True, False, False])[0]
    if needs[1]:
        shape = (channels, block, *weight.shape[2:])  # (C, block, k…): one grouped conv per block of channels
        dense = conv_backward(dy, x, weight.new_empty(shape).contiguous(memory_format=torch.channels_last_3d), None,
                              stride, padding, [1] * 3, False, [0] * 3, channels // block, [False, True, False])[1]
        dw = dense[torch.arange(channels), torch.arange(channels) % block].unsqueeze(1)  # the diagonal
    return dx, dw


class DepthwiseConvFunction(torch.autograd.Function):
    """F.conv3d(x, weight, stride, padding, groups=C) with the faster gradients described above."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: tuple, padding: tuple) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding)
        return F.conv3d(x, weight, None, stride, padding, groups=x.shape[1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy: torch.Tensor) -> tuple:
        x, weight = ctx.saved_tensors
        return (*depthwise_grads(dy, x, weight, *ctx.conf, ctx.needs_input_grad[:2]), None, None)


class DepthwiseConv3d(nn.Conv3d):
    """`nn.Conv3d(C, C, kernel, stride, padding, groups=C, bias=False)` whose CPU float32 channels-last training
    uses `DepthwiseConvFunction`."""

    def __init__(self, channels: int, kernel: tuple[int, int, int], stride: tuple[int, int, int],
                 padding: tuple[int, int, int]):
        super().__init__(channels, channels, kernel, stride, padding, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fast_backward(x):
            return DepthwiseConvFunction.apply(plain(x), self.weight, self.stride, self.padding)
        return super().forward(x)
