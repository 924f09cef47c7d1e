"""3D UNet with per-stage channels, kernels and strides (anisotropic for EM), convolutions from `make_conv3d`.

    x → [stage 0] ─────────────────────────────── cat → [dec 0] → head(1×1×1) → logits
          └→ [stage 1 (strided)] ──────── cat → [dec 1] ─┘ (1×1×1 conv + trilinear up)
                └→ … → [bottleneck] ──────┘
Each stage and decoder level is a double conv (ConvNormAct ×2, or one block spanning both when block_kwargs has
n=2). The stem conv, the upsampling 1×1×1 convs and the head stay plain convolutions whatever the block; strides are
carried by the first conv of each stage.
"""

from collections.abc import Sequence

from torch import nn

from medseg.blocks import Size3
from medseg.errors import MedsegError
from medseg.nets.layers import CHANNELS, KERNEL_SIZES, STRIDES, ConvNormAct, Upsample, UShaped, single_conv_kwargs


class DoubleConv(nn.Sequential):
    """Two ConvNormAct; a block built with `n=2` in its kwargs (PmSC2) replaces both convs jointly."""

    def __init__(self, block: str, first_block: str, in_ch: int, out_ch: int, kernel: Size3, stride: Size3,
                 block_kwargs: dict | None):
        kwargs = block_kwargs or {}
        if kwargs.get("n", 1) >= 2 and first_block == block:
            super().__init__(ConvNormAct(block, in_ch, out_ch, kernel, stride, kwargs))
            return
        single = single_conv_kwargs(kwargs)  # a lone conv (after a plain stem) is one conv
        super().__init__(
            ConvNormAct(first_block, in_ch, out_ch, kernel, stride, single if first_block == block else None),
            ConvNormAct(block, out_ch, out_ch, kernel, 1, single),
        )


class UNet3D(UShaped):
    """Encoder stages with strided double convs, a mirrored decoder with upsampling and skips."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = CHANNELS,
        strides: Sequence[Size3] = STRIDES,
        kernel_sizes: Sequence[Size3] = KERNEL_SIZES,
        block: str = "conv",
        block_kwargs: dict | None = None,
        stem_block: str = "conv",
    ):
        super().__init__()
        if not len(channels) == len(strides) == len(kernel_sizes):
            raise MedsegError("channels, strides and kernel_sizes need one entry per stage")
        self.encoder = nn.ModuleList()
        prev = in_channels
        for i, (ch, stride, kernel) in enumerate(zip(channels, strides, kernel_sizes, strict=True)):
            first = stem_block if i == 0 else block
            self.encoder.append(DoubleConv(block, first, prev, ch, kernel, stride, block_kwargs))
            prev = ch
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in reversed(range(len(channels) - 1)):
            self.upsample.append(Upsample(channels[i + 1], channels[i], strides[i + 1]))
            self.decoder.append(DoubleConv(block, block, 2 * channels[i], channels[i], kernel_sizes[i], 1,
                                           block_kwargs))
        self.decoder_widths = [channels[i] for i in reversed(range(len(channels) - 1))]
        self.head = nn.Conv3d(channels[0], out_channels, 1)
