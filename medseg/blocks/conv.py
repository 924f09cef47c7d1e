"""Plain 3D convolution with "same" padding: the control arm every efficient block is measured against."""

from torch import nn

from medseg.blocks.size import Size3, same_padding, triple


class Conv(nn.Conv3d):
    """`nn.Conv3d` with odd per-axis kernels and "same" padding, so output size is ceil(input / stride)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Size3 = 3, stride: Size3 = 1, *, bias=False):
        kernel = triple(kernel_size)
        super().__init__(in_channels, out_channels, kernel, triple(stride), same_padding(kernel), bias=bias)
