"""SIC: single intra-channel convolution + channel projection (Wang, Liu, Foroosh, arXiv:1608.04337;
docs/specs/blocks-spec.md §4).

    x → depthwise k×k×k (stride) → norm → projection 1×1×1 → y
                                          └ topological: output p sees only a t₁×t₂ window of the channel grid
    bottleneck:  x → depthwise k³ (stride 2s) → norm → projection → norm → act → depthwise transposed ×2 → ⌈L/s⌉

Space and channels are separated: one spatial filter per channel costs k³·C instead of k³·C², and the projection
is a 1×1×1 conv. Topological subdivisioning makes the projection structured-sparse; the spatial bottleneck runs
the projection at 1/8 of the positions. Both are options (docs/specs/blocks-spec.md §4.6 recommends them for wide, deep
layers).
"""

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from medseg.blocks.size import Size3, fit_size, keep_axes, same_output, same_padding, triple
from medseg.errors import MedsegError
from medseg.ops.depthwise import DepthwiseConv3d, depthwise_grads
from medseg.ops.norm import InstanceNorm3d, column_sums, cpu_channels_last, plain, voxel_rows


def depthwise(channels: int, kernel: tuple[int, int, int], stride: tuple[int, int, int],
              spatial: Literal["dw3d", "dwseq"]) -> nn.Module:
    """One k³ filter per channel, or three 1D depthwise filters in sequence (each axis strides on its own)."""
    if spatial == "dw3d":
        return DepthwiseConv3d(channels, kernel, stride, same_padding(kernel))
    if spatial != "dwseq":
        raise MedsegError(f"sic: spatial must be 'dw3d' or 'dwseq', got {spatial!r}")
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


# Fold the norm only where the output has at least this many voxels per channel: the folded statistics are
# C×C matrix products per sample, which outweigh the saved passes over the tensor in deep, small layers
# (timings per layer width and size: docs/dev/cpu-performance.md, `benchmarks/layer_kernels.py`)
FOLD_VOXELS_PER_CHANNEL = 8


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
            raise MedsegError(f"sic: connectivity must be in (0, 1], got {connectivity}")
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
        if isinstance(self.norm, InstanceNorm3d) and self.folds(x):
            y = self.folded(x, None)
        else:
            y = self.project(self.norm(self.spatial(x)))
        if self.up is None:
            return y
        # 2·⌈L/2s⌉ ≥ ⌈L/s⌉: crop the extra voxel of odd sizes
        return fit_size(self.up(y), same_output(x.shape[2:], self.stride))

    def forward_normed(self, x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        """norm(self(x)), with an instance norm folded into the projection where the fused path runs: the
        projection's output statistics follow from the depthwise output's channel sums and Gram matrix, so the
        output is normalised without a pass of its own and the un-normalised tensor is never kept for the backward
        (`ConvNormAct` calls this)."""
        if (self.up is None and type(norm) is InstanceNorm3d and not norm.track_running_stats and self.folds(x)
                and self.out_voxels(x) >= FOLD_VOXELS_PER_CHANNEL * x.shape[1]):
            return self.folded(x, norm)  # also without the inner norm: the outer one still removes d's mean
        return norm(self(x))

    def out_voxels(self, x: torch.Tensor) -> int:
        return math.prod(same_output(x.shape[2:], self.spatial.stride))

    def folds(self, x: torch.Tensor) -> bool:
        return isinstance(self.spatial, DepthwiseConv3d) and cpu_channels_last(x)

    def folded(self, x: torch.Tensor, norm: nn.Module | None) -> torch.Tensor:
        """The depthwise conv → inner norm → projection [→ `norm`] as one `SpatialNormProjection`."""
        inner_eps = self.norm.eps if isinstance(self.norm, InstanceNorm3d) else None
        outer = (None, None, None) if norm is None else (norm.weight, norm.bias, norm.eps)
        return SpatialNormProjection.apply(plain(x), self.spatial.weight, self.project.dense_weight(),
                                           self.project.bias, *outer[:2],
                                           (self.spatial.stride, self.spatial.padding, inner_eps, outer[2]))


def affine_map(total: torch.Tensor, gram: torch.Tensor, voxels: int, weight: torch.Tensor,
               bias: torch.Tensor | None, out_weight: torch.Tensor | None, out_bias: torch.Tensor | None,
               eps: float | None, out_eps: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-sample (N, C_out, C_in) matrix A and (N, C_out) shift c such that d·Aᵀ + c is the projection
    `weight` (C_out, C_in) of d after SIC's parameter-free instance norm (eps; None: no norm), followed, when
    out_eps is given, by an instance norm with affine out_weight, out_bias. Everything comes from d's per-sample
    channel sums `total` (N, C_in) and Gram matrix `gram` (N, C_in, C_in): the norms' statistics are linear
    algebra on these (the outer variance is diag(A·Σ·Aᵀ), Σ the covariance of d), as E[x²] − E[x]², which is
    how group_norm's CPU kernel computes them. Small tensors only: autograd differentiates it in the backward."""
    mean = total / voxels  # (N, C_in)
    cov = gram / voxels - mean[:, :, None] * mean[:, None, :]  # (N, C_in, C_in)
    matrix = weight.expand(total.shape[0], *weight.shape)  # (N, C_out, C_in)
    if eps is not None:
        matrix = matrix * torch.rsqrt(torch.diagonal(cov, dim1=1, dim2=2).clamp_min(0) + eps)[:, None, :]
    if out_eps is not None:  # the bias is a per-channel constant, which the outer norm removes
        scale = torch.rsqrt(((matrix @ cov) * matrix).sum(2).clamp_min(0) + out_eps)  # (N, C_out)
        matrix = matrix * (scale if out_weight is None else scale * out_weight)[:, :, None]
        bias = out_bias
    shift = -(matrix @ mean[:, :, None])[:, :, 0]  # (N, C_out)
    return matrix, shift if bias is None else shift + bias


class SpatialNormProjection(torch.autograd.Function):
    """SIC's depthwise conv → parameter-free norm → projection [→ instance norm] as one step on channels-last CPU
    tensors: one depthwise conv, one Gram matrix, one GEMM (`affine_map`).

    It saves only the block's input: the depthwise output is recomputed in the backward (one cheap depthwise
    forward), and neither the normalised nor the projected tensor exists apart from the output. The two-step path
    kept both for the backward, which made SIC's training step hold far more memory than the conv UNet's
    (`medseg bench`; docs/dev/cpu-performance.md). Backward: with z = d·Aᵀ + c, dA = dzᵀ·d and dc = Σ dz; autograd takes
    these through `affine_map` to the sums, the Gram matrix and the parameters, and dd = dz·A + d·(dG + dGᵀ) + Σ-term.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, dw_weight: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                out_weight: torch.Tensor | None, out_bias: torch.Tensor | None, conf: tuple) -> torch.Tensor:
        stride, padding, eps, out_eps = conf
        d = F.conv3d(x, dw_weight, None, stride, padding, groups=x.shape[1])
        rows = voxel_rows(d)  # (N, V, C_in)
        total, gram = column_sums(rows), rows.transpose(1, 2) @ rows
        matrix, shift = affine_map(total, gram, rows.shape[1], weight, bias, out_weight, out_bias, eps, out_eps)
        out = torch.empty(d.shape[0], weight.shape[0], *d.shape[2:], dtype=d.dtype,
                          memory_format=torch.channels_last_3d)
        # into out's (N, V, C_out) rows, so that out is no view (the in-place activation after it needs that); bmm
        # then add_, as baddbmm first copies the broadcast shift into the output (a slower pass)
        torch.bmm(rows, matrix.transpose(1, 2), out=voxel_rows(out)).add_(shift[:, None, :])
        ctx.save_for_backward(x, dw_weight, weight, bias, out_weight, out_bias, total, gram)
        ctx.conf = conf
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dz: torch.Tensor) -> tuple:
        x, dw_weight, *small = ctx.saved_tensors
        stride, padding, eps, out_eps = ctx.conf
        d = F.conv3d(x, dw_weight, None, stride, padding, groups=x.shape[1])
        rows, dz_rows = voxel_rows(d), voxel_rows(dz.contiguous(memory_format=torch.channels_last_3d))
        with torch.enable_grad():  # weight, bias, out_weight, out_bias, total, gram as leaves of the small graph
            leaves = [None if t is None else t.detach().requires_grad_() for t in small]
            weight, bias, out_weight, out_bias, total, gram = leaves
            matrix, shift = affine_map(total, gram, rows.shape[1], weight, bias, out_weight, out_bias, eps, out_eps)
        given = [t for t in leaves if t is not None]
        grads = iter(torch.autograd.grad((matrix, shift), given, (dz_rows.transpose(1, 2) @ rows,
                                                                   column_sums(dz_rows)), allow_unused=True))
        d_weight, d_bias, d_out_weight, d_out_bias, d_total, d_gram = [
            None if t is None else next(grads) for t in leaves]
        if d_bias is None and bias is not None:  # the outer norm removes the bias: its gradient is zero
            d_bias = torch.zeros_like(bias)
        dd = torch.bmm(rows, d_gram + d_gram.transpose(1, 2))  # (N, V, C_in), a new buffer: d is read in it
        del d, rows
        dd.baddbmm_(dz_rows, matrix.detach()).add_(d_total[:, None, :])
        dd = dd.view(x.shape[0], *dz.shape[2:], -1).permute(0, 4, 1, 2, 3)  # (N, C_in, D', H', W') channels-last
        dx, d_dw = depthwise_grads(dd, x, dw_weight, stride, padding, ctx.needs_input_grad[:2])
        return dx, d_dw, d_weight, d_bias, d_out_weight, d_out_bias, None
