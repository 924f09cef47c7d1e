"""SIC: single intra-channel convolution + channel projection (Wang, Liu, Foroosh, arXiv:1608.04337; blocks-spec §4).

    x → depthwise k×k×k (stride) → norm → projection 1×1×1 → y
                                          └ topological: output p sees only a t₁×t₂ window of the channel grid
    bottleneck:  x → depthwise k³ (stride 2s) → norm → projection → norm → act → depthwise transposed ×2 → ⌈L/s⌉

Space and channels are separated: one spatial filter per channel costs k³·C instead of k³·C², and the projection
is a 1×1×1 conv. Topological subdivisioning makes the projection structured-sparse; the spatial bottleneck runs
the projection at 1/8 of the positions. Both are options (blocks-spec §4.6 recommends them for wide, deep layers).
"""

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from medseg.blocks.depthwise import DepthwiseConv3d, depthwise_grads
from medseg.blocks.norm import InstanceNorm3d, column_sums, cpu_channels_last, instance_stats, plain, voxel_rows
from medseg.blocks.size import Size3, fit_size, keep_axes, same_padding, triple


def depthwise(channels: int, kernel: tuple[int, int, int], stride: tuple[int, int, int],
              spatial: Literal["dw3d", "dwseq"]) -> nn.Module:
    """One k³ filter per channel, or three 1D depthwise filters in sequence (each axis strides on its own)."""
    if spatial == "dw3d":
        return DepthwiseConv3d(channels, kernel, stride, same_padding(kernel))
    if spatial != "dwseq":
        raise ValueError(f"sic: spatial must be 'dw3d' or 'dwseq', got {spatial!r}")
    convs = []
    for a in range(3):
        k = keep_axes(kernel, [a])
        convs.append(DepthwiseConv3d(channels, k, keep_axes(stride, [a]), same_padding(k)))
    return nn.Sequential(*convs)


def channel_grid(channels: int) -> tuple[int, int]:
    """Near-square factorisation g₁ × g₂ = C (64 → 8 × 8)."""
    g1 = max(d for d in range(1, math.isqrt(channels) + 1) if channels % d == 0)
    return g1, channels // g1


def topology(channels: int, connectivity: float) -> torch.Tensor:
    """(C, t₁·t₂) input indices per output: a circular t₁×t₂ window around the output's place on the channel grid,
    with t₁·t₂ / C as close as possible to `connectivity` (ties: the squarer window)."""
    g1, g2 = channel_grid(channels)
    target = connectivity * channels
    t1, t2 = min(((a, b) for a in range(1, g1 + 1) for b in range(1, g2 + 1)),
                 key=lambda t: (abs(t[0] * t[1] - target), abs(t[0] - t[1])))
    rows = []
    for p in range(channels):
        i, j = divmod(p, g2)
        rows.append([((i + di) % g1) * g2 + (j + dj) % g2
                     for di in range(-((t1 - 1) // 2), t1 // 2 + 1) for dj in range(-((t2 - 1) // 2), t2 // 2 + 1)])
    return torch.tensor(rows)


class Projection(nn.Module):
    """1×1×1 channel projection; with an index table, only those (output, input) pairs have weights."""

    def __init__(self, in_channels: int, out_channels: int, index: torch.Tensor | None, bias: bool):
        super().__init__()
        self.in_channels = in_channels
        fan_in = in_channels if index is None else index.shape[1]
        self.register_buffer("index", index)
        self.weight = nn.Parameter(torch.empty(out_channels, fan_in).uniform_(-1, 1) / math.sqrt(fan_in))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def dense_weight(self) -> torch.Tensor:
        if self.index is None:
            return self.weight
        return self.weight.new_zeros(self.weight.shape[0], self.in_channels).scatter(1, self.index, self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv3d(x, self.dense_weight()[:, :, None, None, None], self.bias)  # (C_out, C_in) -> 1×1×1 kernel


class SIC(nn.Module):
    """Drop-in Conv3d: depthwise spatial conv, then a (possibly topological) projection.

    Args:
        spatial: "dw3d" (one k³ filter per channel) or "dwseq" (three 1D depthwise filters in sequence).
        connectivity: fraction of inputs each output sees (topological subdivisioning); applies where
            C_in = C_out, other layers keep a dense projection.
        bottleneck: run the projection at half resolution (strided depthwise → projection → depthwise transposed
            conv) in layers with at least `bottleneck_channels` inputs, i.e. the deep stages.
        norm: parameter-free InstanceNorm between the depthwise conv and the projection.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Size3 = 3, stride: Size3 = 1, *,
                 bias: bool = False, spatial: Literal["dw3d", "dwseq"] = "dw3d", connectivity: float = 1.0,
                 bottleneck: bool = False, bottleneck_channels: int = 64, norm: bool = True):
        super().__init__()
        kernel, stride = triple(kernel_size), triple(stride)
        if not 0 < connectivity <= 1:
            raise ValueError(f"sic: connectivity must be in (0, 1], got {connectivity}")
        self.bottleneck = bottleneck and in_channels >= bottleneck_channels
        up = tuple(2 if self.bottleneck and k > 1 else 1 for k in kernel)
        self.stride = stride
        self.spatial = depthwise(in_channels, kernel, tuple(s * u for s, u in zip(stride, up, strict=True)), spatial)
        self.norm = InstanceNorm3d(in_channels) if norm else nn.Identity()
        sparse = connectivity < 1 and in_channels == out_channels
        self.project = Projection(in_channels, out_channels, topology(in_channels, connectivity) if sparse else None,
                                  bias)
        self.up = None
        if self.bottleneck:
            self.up = nn.Sequential(InstanceNorm3d(out_channels, affine=True), nn.LeakyReLU(0.01, inplace=True),
                                    nn.ConvTranspose3d(out_channels, out_channels, up, up, groups=out_channels,
                                                       bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.spatial, DepthwiseConv3d) and isinstance(self.norm, InstanceNorm3d) and cpu_channels_last(x):
            y = SpatialNormProjection.apply(plain(x), self.spatial.weight, self.project.dense_weight(),
                                            self.project.bias, self.norm.eps, self.spatial.stride, self.spatial.padding)
        else:
            y = self.project(self.norm(self.spatial(x)))
        if self.up is None:
            return y
        size = [math.ceil(n / s) for n, s in zip(x.shape[2:], self.stride, strict=True)]
        return fit_size(self.up(y), size)  # 2·⌈L/2s⌉ ≥ ⌈L/s⌉: crop the extra voxel of odd sizes


def norm_projection(d: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    eps: float) -> tuple[torch.Tensor, tuple]:
    """Parameter-free instance norm of channels-last d, then the projection `weight` (C_out, C_in), without
    materialising the normalised tensor: y = (P·diag(rstd))·d + (b − P·(mean·rstd)), one batched GEMM on the
    (N, voxels, C) view. Returns y (channels-last) and the statistics the backward needs."""
    rows = voxel_rows(d)  # (N, V, C_in)
    mean, rstd = instance_stats(rows, eps)  # (N, C_in)
    scaled = weight * rstd[:, None, :]  # (N, C_out, C_in): P·diag(rstd) per sample
    shift = -(scaled @ mean[:, :, None])[:, :, 0]  # (N, C_out)
    if bias is not None:
        shift = shift + bias
    # (N, V, C_out); bmm then add_, as baddbmm first copies the broadcast shift into the output (a slower pass)
    out = torch.bmm(rows, scaled.transpose(1, 2)).add_(shift[:, None, :])
    return out.view(d.shape[0], *d.shape[2:], -1).permute(0, 4, 1, 2, 3), (mean, rstd, scaled)


def norm_projection_grads(dy: torch.Tensor, d: torch.Tensor, weight: torch.Tensor, stats: tuple) -> tuple:
    """(dd, dweight, dbias) of `norm_projection`; dd is written over `d` (the backward recomputed it)."""
    mean, rstd, scaled = stats
    rows, dy_rows = voxel_rows(d), voxel_rows(dy.contiguous(memory_format=torch.channels_last_3d))
    voxels = rows.shape[1]
    d_shift = column_sums(dy_rows)  # (N, C_out)
    d_scaled = dy_rows.transpose(1, 2) @ rows - d_shift[:, :, None] * mean[:, None, :]  # shift = −scaled·mean
    d_mean = -(d_shift[:, :, None] * scaled).sum(1)  # (N, C_in)
    d_var = -0.5 * (d_scaled * weight).sum(1) * rstd**3  # rstd = (var + eps)^−½, var = E[d²] − mean²
    # dd = d·2·d_var/V + (d_mean − 2·mean·d_var)/V + dy·scaled, written over d: no second full-size buffer
    rows.mul_((2 * d_var / voxels)[:, None, :]).add_((d_mean - 2 * mean * d_var)[:, None, :] / voxels)
    rows.baddbmm_(dy_rows, scaled)
    return d, (d_scaled * rstd[:, None, :]).sum(0), d_shift.sum(0)


class SpatialNormProjection(torch.autograd.Function):
    """SIC's depthwise conv → parameter-free norm → projection as one step on channels-last CPU tensors.

    It saves only the block's input: the depthwise output is recomputed in the backward (one depthwise forward,
    2×8×64³: 3 ms), and the normalised tensor never exists (`norm_projection`). The two-step path kept both for
    the backward, which made SIC's training step hold 1.70× the conv UNet's memory (`medseg bench`).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, dw_weight: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                eps: float, stride: tuple, padding: tuple) -> torch.Tensor:
        d = F.conv3d(x, dw_weight, None, stride, padding, groups=x.shape[1])
        y, stats = norm_projection(d, weight, bias, eps)
        ctx.save_for_backward(x, dw_weight, weight, *stats)
        ctx.conf = (stride, padding)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy: torch.Tensor) -> tuple:
        x, dw_weight, weight, *stats = ctx.saved_tensors
        stride, padding = ctx.conf
        d = F.conv3d(x, dw_weight, None, stride, padding, groups=x.shape[1])
        dd, d_weight, d_bias = norm_projection_grads(dy, d, weight, stats)  # dd: d's buffer
        dx, d_dw = depthwise_grads(dd, x, dw_weight, stride, padding, ctx.needs_input_grad[:2])
        return dx, d_dw, d_weight, d_bias if ctx.needs_input_grad[3] else None, None, None, None
