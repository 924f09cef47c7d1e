"""3D segmentation DenseNet (FC-DenseNet / 3D-DenseSeg family) whose 3×3×3 convs come from `make_conv3d`.

    x → [stem, dense 0] ───────────────────────────────── cat → [fuse 1×1, dense] → head(1×1×1) → logits
             └→ [transition: pool, 1×1 → dense 1] ───── cat → [fuse 1×1, dense] ─┘ (1×1×1 conv + trilinear up)
                                      └→ … → [transition, dense n−1] ─┘
    dense layer:  x ─┬─ 1×1×1 bottleneck (bn_size·g) → block k×k×k (g) ─┐ cat → (C + g)
                     └─────────────────────────────────────────────────┘

Only the k×k×k conv of each dense layer (and the stem, through `stem_block`) is swappable: bottlenecks,
transitions, fuses, up-sampling and the head are the plain 1×1×1 convs that docs/specs/blocks-spec.md §2.5 keeps
(up-sampling is the UNet's `Upsample`, so the two nets differ only in their stages). Transitions pool with kernel =
stride (exact anisotropic strides such as (2, 2, 1), ceil for odd sizes) and then compress with a 1×1×1 conv to the
stage width; both are linear, so pooling first gives the same features at a fraction of the cost.
"""

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from medseg.blocks import Size3
from medseg.blocks.size import triple
from medseg.errors import MedsegError
from medseg.nets.layers import CHANNELS, KERNEL_SIZES, STRIDES, ConvNormAct, Upsample, UShaped, single_conv_kwargs


class DenseLayer(nn.Module):
    """1×1×1 bottleneck to bn_size·growth channels, then the swappable conv to `growth` new channels."""

    def __init__(self, block: str, in_ch: int, growth: int, bn_size: int, kernel: Size3, block_kwargs: dict | None):
        super().__init__()
        self.bottleneck = ConvNormAct("conv", in_ch, bn_size * growth, 1)
        self.conv = ConvNormAct(block, bn_size * growth, growth, kernel, 1, single_conv_kwargs(block_kwargs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(self.bottleneck(x))], dim=1)  # (N, C + growth, D, H, W)


def dense_layers(block: str, in_ch: int, layers: int, growth: int, bn_size: int, kernel: Size3,
                 block_kwargs: dict | None) -> list[tuple[str, nn.Module]]:
    """Named dense layers `layer0 …`, so block_kwargs keyed by module name read e.g. `encoder.2.layer1.conv.0`."""
    return [(f"layer{j}", DenseLayer(block, in_ch + j * growth, growth, bn_size, kernel, block_kwargs))
            for j in range(layers)]


def transition(in_ch: int, out_ch: int, stride: Size3) -> nn.Sequential:
    """Average-pool by the stage stride (kernel = stride) and compress to the stage width with a 1×1×1 conv."""
    s = triple(stride)
    pool = nn.AvgPool3d(s, s, ceil_mode=True) if s != (1, 1, 1) else nn.Identity()
    return nn.Sequential(OrderedDict(pool=pool, conv=ConvNormAct("conv", in_ch, out_ch, 1)))


def per_stage(value: int | Sequence[int], stages: int, name: str) -> list[int]:
    values = [value] * stages if isinstance(value, int) else list(value)
    if len(values) != stages or any(v < 1 for v in values):
        raise MedsegError(f"{name} needs one positive value per stage ({stages}), got {value!r}")
    return values


class DenseNet3D(UShaped):
    """Dense encoder stages joined by pooling transitions; a dense decoder with upsampling and skips.

    Args (besides UNet3D's, which mean the same here):
        channels: width of each stage after its transition (stage 0: after the stem); a stage's dense block grows
            it by layers·growth before the skip and the next transition.
        growth: channels each dense layer adds, an int or one per stage; defaults to half the stage width, so the
            dense layers scale with depth like the UNet's double convs and the cost stays in the UNet's range.
        layers_per_stage: dense layers per encoder stage and decoder level, an int or one per stage.
        bn_size: bottleneck width as a multiple of growth (the input width of the swappable conv).
    """

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
        growth: int | Sequence[int] | None = None,
        layers_per_stage: int | Sequence[int] = 2,
        bn_size: int = 4,
    ):
        super().__init__()
        if not len(channels) == len(strides) == len(kernel_sizes):
            raise MedsegError("channels, strides and kernel_sizes need one entry per stage")
        n = len(channels)
        growths = per_stage(growth if growth is not None else [max(1, c // 2) for c in channels], n, "growth")
        layers = per_stage(layers_per_stage, n, "layers_per_stage")
        widths = [c + lay * g for c, lay, g in zip(channels, layers, growths, strict=True)]  # dense block outputs
        stem = ConvNormAct(stem_block, in_channels, channels[0], kernel_sizes[0], strides[0],
                           single_conv_kwargs(block_kwargs) if stem_block == block else None)
        self.encoder = nn.ModuleList()
        for i in range(n):
            entry = [("transition", transition(widths[i - 1], channels[i], strides[i]))] if i else [("stem", stem)]
            dense = dense_layers(block, channels[i], layers[i], growths[i], bn_size, kernel_sizes[i], block_kwargs)
            self.encoder.append(nn.Sequential(OrderedDict(entry + dense)))
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in reversed(range(n - 1)):
            self.upsample.append(Upsample(widths[i + 1], channels[i], strides[i + 1]))
            fuse = ConvNormAct("conv", channels[i] + widths[i], channels[i], 1)
            dense = dense_layers(block, channels[i], layers[i], growths[i], bn_size, kernel_sizes[i], block_kwargs)
            self.decoder.append(nn.Sequential(OrderedDict([("fuse", fuse), *dense])))
        self.decoder_widths = [widths[i] for i in reversed(range(n - 1))]
        self.head = nn.Conv3d(widths[0], out_channels, 1)
