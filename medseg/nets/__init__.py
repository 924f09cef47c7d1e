"""Segmentation networks, built by name so a checkpoint can rebuild them from plain hyper-parameters."""

from typing import Literal

from torch import nn

from medseg.blocks import configure_blocks
from medseg.nets.densenet import DenseNet3D
from medseg.nets.unet import UNet3D
from medseg.registry import look_up

NETS: dict[str, type[nn.Module]] = {"unet": UNet3D, "densenet": DenseNet3D}
ArchKind = Literal[tuple(NETS)]


def build_net(arch: str, in_channels: int, out_channels: int, **kwargs) -> nn.Module:
    """Instantiate architecture `arch`; unknown names raise a ValueError listing the valid ones."""
    return configure_blocks(look_up(arch, NETS, "architecture")(in_channels, out_channels, **kwargs))


__all__ = ["NETS", "ArchKind", "build_net"]
