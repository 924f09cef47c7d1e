"""Drop-in replacements for `nn.Conv3d`, chosen by name through one factory.

Contract for every block: constructor `(in_channels, out_channels, kernel_size=3, stride=1, *, bias=False, **kw)`,
int or per-axis kernel and stride, "same" padding (output = ceil(input / stride)), no norm or activation at the
output. Nets call `make_conv3d` and never import a block class, so adding a block here is the only switch.
"""

from typing import Literal, get_args

from torch import nn

from medseg.blocks.conv import Conv
from medseg.blocks.size import Size3

BlockKind = Literal["conv"]
BLOCKS: dict[str, type[nn.Module]] = {"conv": Conv}

assert tuple(BLOCKS) == get_args(BlockKind), "BlockKind must list exactly the keys of BLOCKS"


def make_conv3d(
    kind: str | type[nn.Module],
    in_channels: int,
    out_channels: int,
    kernel_size: Size3 = 3,
    stride: Size3 = 1,
    *,
    bias: bool = False,
    **kwargs,
) -> nn.Module:
    """Build the 3D convolution `kind` (a registered name, or a class for experiments)."""
    if isinstance(kind, str):
        if kind not in BLOCKS:
            raise ValueError(f"unknown block {kind!r}; choose one of {sorted(BLOCKS)}")
        kind = BLOCKS[kind]
    return kind(in_channels, out_channels, kernel_size, stride, bias=bias, **kwargs)


__all__ = ["BLOCKS", "BlockKind", "Size3", "make_conv3d"]
