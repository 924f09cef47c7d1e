"""PmSCn: parallel separable 3D convolution (Gonda, Wei, Parag, Pfister, arXiv:1809.04096; blocks-spec §2).

    x ─┬─ 2D ⟂a₀ ─[norm─act─2D ⟂a₀]×(n−1)─ norm─act─ 1D along a₀ ─┐
       ├─ 2D ⟂a₁ ─ …                                 ─ 1D along a₁ ─┤ (+) → y        (or concat)
       └─ 2D ⟂a₂ ─ …                                 ─ 1D along a₂ ─┘

One 2D→1D stream is rank-limited (a single (2+1)D factorisation); summing streams on different planes raises the
rank, while the stream width M is the rank budget that makes the block cheaper than the 3D conv(s) it replaces.
With n ≥ 2 a block replaces n consecutive 3D convs (a UNet double conv), sharing one 1D conv per stream.

Axes are the spatial axes of (N, C, S0, S1, S2); after RAS reorientation S2 is through-plane for axial scans, so
`axis=2` (the default) makes the m = 1 stream in-plane 2D + through-plane 1D. Strides follow R(2+1)D: the first
2D conv strides on its plane, the 1D conv on its axis. Norm + LeakyReLU sit inside each stream (not at the output).
"""

import math
from typing import Literal

import torch
from torch import nn

from medseg.blocks.norm import InstanceNorm3d
from medseg.blocks.size import Size3, even_split, keep_axes, same_padding, triple


def stream_axes(m: int, axis: int) -> list[int]:
    """The 1D axis of each stream: `axis` first, then the others in cyclic order."""
    if m not in (1, 2, 3):
        raise ValueError(f"pmscn: m must be 1, 2 or 3 streams, got {m}")
    return [(axis + i) % 3 for i in range(m)]


class Stream(nn.Sequential):
    """n 2D convs on the plane orthogonal to `axis` (norm + act between), then one 1D conv along `axis`."""

    def __init__(self, in_channels: int, width: int, out_channels: int, kernel: tuple[int, int, int],
                 stride: tuple[int, int, int], axis: int, n: int, k1d: int, inner_act: bool, bias: bool):
        plane = [a for a in range(3) if a != axis]
        k2d, s2d = keep_axes(kernel, plane), keep_axes(stride, plane)
        layers: list[nn.Module] = []
        for j in range(n):
            layers.append(nn.Conv3d(in_channels if j == 0 else width, width, k2d, s2d if j == 0 else 1,
                                    same_padding(k2d), bias=False))
            if inner_act:
                layers += [InstanceNorm3d(width, affine=True), nn.LeakyReLU(0.01, inplace=True)]
        k1 = keep_axes((k1d,) * 3, [axis]) if kernel[axis] > 1 else (1, 1, 1)
        layers.append(nn.Conv3d(width, out_channels, k1, keep_axes(stride, [axis]), same_padding(k1), bias=bias))
        super().__init__(*layers)


class PmSCn(nn.Module):
    """Drop-in Conv3d made of m parallel 2D→1D streams (sum-merged by default).

    Args:
        m: streams (1, 2 or 3); their 1D axes are `axis`, then the next axes cyclically.
        n: 2D convs per stream; n = 2 replaces two consecutive 3D convs (PmSC2).
        width: stream width M; defaults to ceil(C_out / m) for "sum" and to each stream's output share for
            "concat", which is what makes the block ~0.4× a Conv3d's parameters (blocks-spec §2.4).
        k1d: 1D kernel length; defaults to the base kernel for m ≥ 2 and n(k−1)+1 for m = 1 (keeps the receptive
            field of the n convs replaced, blocks-spec §2.7 P5).
        inner_act: norm + activation inside the streams; False gives the linear block of the decomposition view.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Size3 = 3, stride: Size3 = 1, *,
                 bias: bool = False, m: int = 3, n: int = 1, width: int | None = None, k1d: int | None = None,
                 merge: Literal["sum", "concat"] = "sum", axis: int = 2, inner_act: bool = True):
        super().__init__()
        kernel, stride = triple(kernel_size), triple(stride)
        if merge not in ("sum", "concat"):
            raise ValueError(f"pmscn: merge must be 'sum' or 'concat', got {merge!r}")
        if n < 1:
            raise ValueError(f"pmscn: n must be ≥ 1, got {n}")
        axes = stream_axes(m, axis)
        outs = [out_channels] * m if merge == "sum" else even_split(out_channels, m)
        self.merge = merge
        self.streams = nn.ModuleList()
        for s, (a, out) in enumerate(zip(axes, outs, strict=True)):
            length = k1d or (kernel[a] if m > 1 else n * (kernel[a] - 1) + 1)
            w = width or (math.ceil(out_channels / m) if merge == "sum" else out)
            has_bias = bias and (merge == "concat" or s == 0)  # one bias for the summed output
            self.streams.append(Stream(in_channels, w, out, kernel, stride, a, n, length, inner_act, has_bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merge == "concat":
            return torch.cat([stream(x) for stream in self.streams], dim=1)  # (N, Σ C_out/m, ...) = (N, C_out, ...)
        y = self.streams[0](x)
        for stream in self.streams[1:]:
            y = y.add_(stream(x))  # in place: one output tensor alive instead of m (a conv's output is not saved)
        return y
