"""Conv → InstanceNorm → LeakyReLU, the unit both nets are built from; the conv comes from `make_conv3d`."""

import torch
from torch import nn

from medseg.blocks import Size3, make_conv3d
from medseg.blocks.size import fit_size, triple
from medseg.ops.norm import InstanceNorm3d

# The default stages of every net, and of `medseg train` (SegModule): width, stride and kernel per stage.
CHANNELS = [8, 16, 32, 64, 128]
STRIDES = [1, 2, 2, 2, 2]
KERNEL_SIZES = [3, 3, 3, 3, 3]


class ConvNormAct(nn.Sequential):
    """One swappable 3D conv followed by the norm and activation that blocks deliberately leave out; a block with a
    `forward_normed(x, norm)` (SIC) computes conv + norm as one step, with the same modules and state_dict."""

    def __init__(self, block: str, in_channels: int, out_channels: int, kernel_size: Size3, stride: Size3 = 1,
                 block_kwargs: dict | None = None):
        super().__init__(
            make_conv3d(block, in_channels, out_channels, kernel_size, stride, **(block_kwargs or {})),
            InstanceNorm3d(out_channels, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, norm, act = self
        normed = getattr(conv, "forward_normed", None)  # a block that folds the norm after it into its own step
        return act(normed(x, norm) if normed else norm(conv(x)))


class Upsample(nn.Sequential):
    """1×1×1 conv to the skip's width, then trilinear interpolation by the stage stride (per axis, so (2, 2, 1)
    works). A transposed conv would hold 8× the parameters and outweigh a whole SIC decoder; the decoder convs
    that follow do the learning."""

    def __init__(self, in_channels: int, out_channels: int, stride: Size3):
        super().__init__(
            nn.Conv3d(in_channels, out_channels, 1, bias=False),
            nn.Upsample(scale_factor=tuple(float(s) for s in triple(stride)), mode="trilinear"),
        )


def single_conv_kwargs(block_kwargs: dict | None) -> dict:
    """Block options for a conv that stands alone: `n` (how many consecutive convs one block replaces, PmSC2) is 1."""
    kwargs = dict(block_kwargs or {})
    return {**kwargs, "n": 1} if "n" in kwargs else kwargs


class UShaped(nn.Module):
    """The forward both nets share: encoder stages keep their outputs as skips; each decoder level upsamples,
    concatenates the skip and convolves; a 1×1×1 head gives the logits. Subclasses fill the four parts."""

    encoder: nn.ModuleList
    upsample: nn.ModuleList
    decoder: nn.ModuleList
    head: nn.Conv3d
    decoder_widths: list[int]  # output channels of each decoder level, lowest resolution first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder_features(x)[-1])

    def decoder_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every decoder level's output, lowest resolution first (deep supervision puts its heads on them); the
        bottleneck's when there is no decoder."""
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        features = []
        for up, dec in zip(self.upsample, self.decoder, strict=True):
            skip = skips.pop()
            x = fit_size(up(x), skip.shape[2:])
            if skip.is_contiguous(memory_format=torch.channels_last_3d):  # one thread: oneDNN's 1×1×1 conv on the
                x = x.contiguous(memory_format=torch.channels_last_3d)  # 4³ bottleneck answers NCDHW (decoder too)
            x = torch.cat([x, skip], dim=1)  # (N, C_up + C_skip, D, H, W)
            del skip  # the level's peak holds only the concatenation, not its parts as well
            x = dec(x)
            features.append(x)
        return features or [x]
