"""Conv → InstanceNorm → LeakyReLU, the unit both nets are built from; the conv comes from `make_conv3d`."""

import torch
from torch import nn
from torch.nn import functional as F

from medseg.blocks import Size3, make_conv3d


class ConvNormAct(nn.Sequential):
    """One swappable 3D conv followed by the norm and activation that blocks deliberately leave out."""

    def __init__(self, block: str, in_channels: int, out_channels: int, kernel_size: Size3, stride: Size3 = 1,
                 block_kwargs: dict | None = None):
        super().__init__(
            make_conv3d(block, in_channels, out_channels, kernel_size, stride, **(block_kwargs or {})),
            nn.InstanceNorm3d(out_channels, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
        )


def match_size(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Crop or zero-pad x's spatial size to like's, for decoders fed odd-sized inputs."""
    pads = []
    for have, want in zip(reversed(x.shape[2:]), reversed(like.shape[2:]), strict=True):
        pads += [0, want - have]
    return F.pad(x, pads) if any(pads) else x
