"""Segmentation networks, built by name so a checkpoint can rebuild them from plain hyper-parameters."""

from typing import Literal

from torch import nn

from medseg.blocks import configure_blocks
from medseg.nets.densenet import DenseNet3D
from medseg.nets.unet import UNet3D

ArchKind = Literal["unet", "densenet"]
NETS: dict[str, type[nn.Module]] = {"unet": UNet3D, "densenet": DenseNet3D}


def build_net(arch: str, in_channels: int, out_channels: int, **kwargs) -> nn.Module:
    """Instantiate architecture `arch`; unknown names raise a ValueError listing the valid ones."""
    if arch not in NETS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(NETS)}")
    return configure_blocks(NETS[arch](in_channels, out_channels, **kwargs))


__all__ = ["NETS", "ArchKind", "build_net"]
