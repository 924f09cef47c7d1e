"""3D UNet with per-stage channels, kernels and strides (anisotropic for EM), convolutions from `make_conv3d`.

    x → [stage 0] ─────────────────────────────── cat → [dec 0] → head(1×1×1) → logits
          └→ [stage 1 (strided)] ──────── cat → [dec 1] ─┘ (transposed conv up)
                └→ … → [bottleneck] ──────┘
Each stage and decoder level is a double conv (ConvNormAct ×2). The stem conv, transposed convs and the head
stay plain convolutions whatever the block; strides are carried by the first conv of each stage.
"""

from collections.abc import Sequence

import torch
from torch import nn

from medseg.blocks import Size3
from medseg.nets.layers import ConvNormAct, match_size


class DoubleConv(nn.Sequential):
    def __init__(self, block: str, first_block: str, in_ch: int, out_ch: int, kernel: Size3, stride: Size3,
                 block_kwargs: dict | None):
        super().__init__(
            ConvNormAct(first_block, in_ch, out_ch, kernel, stride, block_kwargs if first_block == block else None),
            ConvNormAct(block, out_ch, out_ch, kernel, 1, block_kwargs),
        )


class UNet3D(nn.Module):
    """Encoder stages with strided double convs, a mirrored decoder with transposed-conv upsampling and skips."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[Size3] = (1, 2, 2, 2),
        kernel_sizes: Sequence[Size3] = (3, 3, 3, 3),
        block: str = "conv",
        block_kwargs: dict | None = None,
        stem_block: str = "conv",
    ):
        super().__init__()
        if not len(channels) == len(strides) == len(kernel_sizes):
            raise ValueError("channels, strides and kernel_sizes need one entry per stage")
        self.encoder = nn.ModuleList()
        prev = in_channels
        for i, (ch, stride, kernel) in enumerate(zip(channels, strides, kernel_sizes, strict=True)):
            first = stem_block if i == 0 else block
            self.encoder.append(DoubleConv(block, first, prev, ch, kernel, stride, block_kwargs))
            prev = ch
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in reversed(range(len(channels) - 1)):
            stride = strides[i + 1]
            self.upsample.append(nn.ConvTranspose3d(channels[i + 1], channels[i], stride, stride, bias=False))
            self.decoder.append(DoubleConv(block, block, 2 * channels[i], channels[i], kernel_sizes[i], 1,
                                           block_kwargs))
        self.head = nn.Conv3d(channels[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.upsample, self.decoder, strict=True):
            skip = skips.pop()
            x = match_size(up(x), skip)
            x = dec(torch.cat([x, skip], dim=1))  # (N, 2C, D, H, W)
        return self.head(x)
