"""Per-axis kernel/stride and channel-split helpers shared by the blocks."""

import math
from collections.abc import Sequence

import torch
from torch.nn import functional as F

from medseg.errors import MedsegError

Size3 = int | tuple[int, int, int] | list[int]


def triple(value: Size3) -> tuple[int, int, int]:
    """Expand an int or a 3-sequence to a per-axis tuple."""
    if isinstance(value, int):
        return (value, value, value)
    if len(value) != 3:
        raise MedsegError(f"expected an int or 3 values, got {value!r}")
    return tuple(int(v) for v in value)


def same_padding(kernel: tuple[int, int, int]) -> tuple[int, int, int]:
    """Padding that keeps ceil(L / s) outputs for odd kernels (docs/specs/blocks-spec.md §1 shape-alignment rule)."""
    if any(k % 2 == 0 for k in kernel):
        raise MedsegError(f"kernel sizes must be odd, got {kernel}")
    return tuple(k // 2 for k in kernel)


def same_output(size: Sequence[int], stride: Sequence[int]) -> list[int]:
    """Spatial size of a "same"-padded conv's output: ceil(L / s) per axis."""
    return [math.ceil(n / s) for n, s in zip(size, stride, strict=True)]


def keep_axes(values: tuple[int, int, int], axes: set[int] | list[int] | tuple[int, ...]) -> tuple[int, int, int]:
    """values on `axes`, 1 elsewhere: the kernel (or stride) of a sub-conv that only acts along those axes."""
    return tuple(v if i in axes else 1 for i, v in enumerate(values))


def even_split(total: int, parts: int) -> list[int]:
    """Channels split over parts, the first taking the remainder (64 → 22, 21, 21), as the CAKES code does."""
    return [total - (parts - 1) * (total // parts)] + [total // parts] * (parts - 1)


def fit_size(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop or zero-pad x's spatial axes (the end side) to `size`."""
    pads = []
    for have, want in zip(reversed(x.shape[2:]), reversed(tuple(size)), strict=True):
        pads += [0, want - have]
    return F.pad(x, pads) if any(pads) else x


def pad_kernel(weight: torch.Tensor, kernel: tuple[int, int, int]) -> torch.Tensor:
    """A sub-kernel's conv weight zero-padded (centred) to `kernel`: with "same" padding the padded conv gives the
    same output, so convs of different sub-kernels can run as one."""
    pads = []
    for full, own in zip(reversed(kernel), reversed(weight.shape[2:]), strict=True):
        pads += [(full - own) // 2] * 2
    return F.pad(weight, pads)  # (C_out, C_in, k0, k1, k2)
