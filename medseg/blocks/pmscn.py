"""PmSCn: parallel separable 3D convolution (Gonda, Wei, Parag, Pfister, arXiv:1809.04096; docs/specs/blocks-spec.md
§2).

    x ─┬─ 2D ⟂a₀ ─[norm─act─2D ⟂a₀]×(n−1)─ norm─act─ 1D along a₀ ─┐
       ├─ 2D ⟂a₁ ─ …                                 ─ 1D along a₁ ─┤ (+) → y        (or concat)
       └─ 2D ⟂a₂ ─ …                                 ─ 1D along a₂ ─┘

One 2D→1D stream is rank-limited (a single (2+1)D factorisation); summing streams on different planes raises the
rank, while the stream width M is the rank budget that makes the block cheaper than the 3D conv(s) it replaces.
With n ≥ 2 a block replaces n consecutive 3D convs (a UNet double conv), sharing one 1D conv per stream.

Axes are the spatial axes of (N, C, S0, S1, S2); after RAS reorientation S2 is through-plane for axial scans, so
`axis=2` (the default) makes the m = 1 stream in-plane 2D + through-plane 1D. Strides follow R(2+1)D: the first
2D conv strides on its plane, the 1D conv on its axis.

Nonlinear streams cannot be fast in narrow layers: below 16 channels each thin 2D or 1D conv costs about what a
16-channel one does (oneDNN computes channels in blocks of 16 on AVX-512), so at a UNet's 8-channel full resolution
the three streams with their norms take several times the 3D conv they replace. Linear streams (`inner_act=False`, the
norm─act pairs above left out) make the block a rank-limited 3D conv (docs/specs/blocks-spec.md §2.3), and with n = 1,
since each stream's 2D and 1D conv act on different axes, exactly one Conv3d whose kernel is built from the stream
weights on every call (re-parameterisation, as ACNet and RepVGG fuse branches; gradients reach the stream weights
through it). The default for n = 1, `inner_act="wide"`, takes each layer's cheaper form: linear and fused where the
one conv does fewer padded multiply-adds than the streams (narrow and strided layers), norm + act inside the
streams elsewhere: in the block comparison (experiments/compare_blocks.py) it kept whole-tumour Dice within the
seed spread of norm + act everywhere at a shorter training step, where all-linear streams lost Dice (numbers:
docs/dev/cpu-performance.md). n ≥ 2 keeps norm + act (its block spans n layers), as did every PmSCn before checkpoint
format 3 (such checkpoints load with it).
"""

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from medseg.blocks.size import Size3, even_split, keep_axes, pad_kernel, same_padding, triple
from medseg.errors import MedsegError
from medseg.ops import fast_paths_enabled
from medseg.ops.norm import InstanceNorm3d, fast_backward

LANES = 16  # channels per SIMD block of oneDNN's AVX-512 convolutions: a thinner conv costs as if this wide


def lanes(channels: int) -> int:
    return -(-channels // LANES) * LANES


def stream_axes(m: int, axis: int) -> list[int]:
    """The 1D axis of each stream: `axis` first, then the others in cyclic order."""
    if m not in (1, 2, 3):
        raise MedsegError(f"pmscn: m must be 1, 2 or 3 streams, got {m}")
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
        self.recompute = inner_act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Training on the CPU (channels-last float32), a stream with norm + act inside keeps only its input for
        the backward and runs again there: its intermediates are 2 × m thin tensors per layer, which made PmSCn's
        training step hold far more memory than the conv UNet's and cost more time in memory traffic than the
        recompute does (`medseg bench`; docs/dev/cpu-performance.md)."""
        if self.recompute and fast_backward(x):
            return checkpoint(super().forward, x, use_reentrant=False, preserve_rng_state=False)
        return super().forward(x)

    def kernel(self) -> torch.Tensor:
        """The Conv3d kernel equal to a linear n = 1 stream: per channel pair the outer product of its 2D kernel
        (1 tap on the stream's axis) and its 1D kernel (1 tap on the plane), summed over the stream width."""
        plane, line = self[0].weight, self[-1].weight  # (M, C_in, *k_plane), (C_out, M, *k_line)
        w = torch.einsum("omt,mip->oitp", line.flatten(2), plane.flatten(2))  # (C_out, C_in, k_line, k_plane)
        w = w.reshape(*w.shape[:2], *line.shape[2:], *plane.shape[2:])  # (C_out, C_in, l0, l1, l2, p0, p1, p2)
        w = w.permute(0, 1, 2, 5, 3, 6, 4, 7)  # (C_out, C_in, l0, p0, l1, p1, l2, p2): one of each pair is 1
        return w.reshape(*w.shape[:2], *(a * b for a, b in zip(line.shape[2:], plane.shape[2:], strict=True)))


class PmSCn(nn.Module):
    """Drop-in Conv3d made of m parallel 2D→1D streams (sum-merged by default).

    Args:
        m: streams (1, 2 or 3); their 1D axes are `axis`, then the next axes cyclically.
        n: 2D convs per stream; n = 2 replaces two consecutive 3D convs (PmSC2).
        width: stream width M; defaults to ceil(C_out / m) for "sum" and to each stream's output share for
            "concat", which is what makes the block ~0.4× a Conv3d's parameters (docs/specs/blocks-spec.md §2.4).
        k1d: 1D kernel length; defaults to the base kernel for m ≥ 2 and n(k−1)+1 for m = 1 (keeps the receptive
            field of the n convs replaced, docs/specs/blocks-spec.md §2.7 P5).
        inner_act: norm + activation inside the streams: True, False (the linear block of the decomposition view,
            run as one Conv3d where that is cheaper, `fuse`), or "wide": True only where the streams are cheaper
            than that one conv. Default: "wide" for n = 1, True for n ≥ 2.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Size3 = 3, stride: Size3 = 1, *,
                 bias: bool = False, m: int = 3, n: int = 1, width: int | None = None, k1d: int | None = None,
                 merge: Literal["sum", "concat"] = "sum", axis: int = 2,
                 inner_act: bool | Literal["wide"] | None = None):
        super().__init__()
        kernel, stride = triple(kernel_size), triple(stride)
        if merge not in ("sum", "concat"):
            raise MedsegError(f"pmscn: merge must be 'sum' or 'concat', got {merge!r}")
        if n < 1:
            raise MedsegError(f"pmscn: n must be ≥ 1, got {n}")
        if inner_act not in (None, True, False, "wide"):
            raise MedsegError(f"pmscn: inner_act must be true, false or 'wide', got {inner_act!r}")
        axes = stream_axes(m, axis)
        outs = [out_channels] * m if merge == "sum" else even_split(out_channels, m)
        widths = [width or (math.ceil(out_channels / m) if merge == "sum" else out) for out in outs]
        lengths = [k1d or (kernel[a] if m > 1 else n * (kernel[a] - 1) + 1) for a in axes]
        lines = [length if kernel[a] > 1 else 1 for a, length in zip(axes, lengths, strict=True)]
        shapes = [tuple(line if d == a else kernel[d] for d in range(3)) for a, line in zip(axes, lines, strict=True)]
        self.fused_shape = tuple(max(k[d] for k in shapes) for d in range(3))
        # padded multiply-adds per output voxel (channels in blocks of LANES); the 2D conv skips its axis' stride
        factored_cost = sum(math.prod(keep_axes(kernel, [d for d in range(3) if d != a])) * lanes(in_channels)
                            * lanes(w) * stride[a] + line * lanes(w) * lanes(out)
                            for a, w, line, out in zip(axes, widths, lines, outs, strict=True))
        fused_cost = math.prod(self.fused_shape) * lanes(in_channels) * lanes(out_channels)
        cheaper_fused = n == 1 and fused_cost <= factored_cost
        if inner_act is None:
            inner_act = True if n > 1 else "wide"
        if inner_act == "wide":  # part of checkpoint format 3: a changed rule would change the modules built
            inner_act = not cheaper_fused
        self.fuse = not inner_act and cheaper_fused
        self.merge, self.stride = merge, stride
        self.streams = nn.ModuleList()
        for s, (a, out, w, length) in enumerate(zip(axes, outs, widths, lengths, strict=True)):
            has_bias = bias and (merge == "concat" or s == 0)  # one bias for the summed output
            self.streams.append(Stream(in_channels, w, out, kernel, stride, a, n, length, inner_act, has_bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fuse and fast_paths_enabled():
            return self.fused(x)
        if self.merge == "concat":
            return torch.cat([stream(x) for stream in self.streams], dim=1)  # (N, Σ C_out/m, ...) = (N, C_out, ...)
        y = self.streams[0](x)
        for stream in self.streams[1:]:
            y = y.add_(stream(x))  # in place: one output tensor alive instead of m (a conv's output is not saved)
        return y

    def fused(self, x: torch.Tensor) -> torch.Tensor:
        """The linear n = 1 block as one Conv3d: equal to the streams (each stream's padding is its kernel's own
        "same" padding, so zero-padding the kernels to a common size keeps every output voxel)."""
        kernels = [pad_kernel(stream.kernel(), self.fused_shape) for stream in self.streams]
        biases = [stream[-1].bias for stream in self.streams]
        if self.merge == "sum":
            weight, bias = torch.stack(kernels).sum(0), biases[0]
        else:
            weight, bias = torch.cat(kernels), (torch.cat(biases) if biases[0] is not None else None)
        return F.conv3d(x, weight, bias, self.stride, same_padding(self.fused_shape))
