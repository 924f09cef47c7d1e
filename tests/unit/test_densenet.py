import re

import pytest
import torch
from torch import nn

from medseg.blocks import BLOCKS
from medseg.nets import build_net

TINY = {"channels": [4, 8, 16], "strides": [1, 2, 2], "kernel_sizes": [3, 3, 3]}
EM = {"channels": [4, 8, 16], "strides": [1, [2, 2, 1], [2, 2, 2]], "kernel_sizes": [[3, 3, 1], [3, 3, 1], 3]}


class Probe(nn.Conv3d):
    """A conv kind no net knows by name: every instance in a net was chosen through make_conv3d."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, *, bias, tag=None):
        kernel = (kernel_size,) * 3 if isinstance(kernel_size, int) else tuple(kernel_size)
        super().__init__(in_channels, out_channels, kernel, stride, tuple(k // 2 for k in kernel), bias=bias)
        self.tag = tag


@pytest.mark.parametrize(
    "kwargs, size",
    [(TINY, (16, 20, 12)), (TINY, (15, 17, 9)), (EM, (33, 31, 7)), ({**EM, "growth": 3, "layers_per_stage": [1, 2, 3]},
                                                                    (17, 16, 5))],
    ids=["isotropic", "odd-size", "anisotropic-em", "custom-growth"],
)
def test_densenet_keeps_input_size_and_trains(kwargs, size):
    net = build_net("densenet", 2, 3, **kwargs)
    y = net(torch.randn(1, 2, *size))
    assert y.shape == (1, 3, *size)
    y.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_every_registered_block_builds_into_densenet(block):
    net = build_net("densenet", 1, 2, block=block, **EM)
    assert net(torch.randn(1, 1, 16, 15, 5)).shape == (1, 2, 16, 15, 5)


@pytest.mark.parametrize("stem_block", ["conv", Probe], ids=["plain-stem", "probe-stem"])
def test_only_the_dense_layer_convs_are_swapped(stem_block):
    layers = 3
    net = build_net("densenet", 2, 3, block=Probe, block_kwargs={"tag": "seen"}, stem_block=stem_block,
                    layers_per_stage=layers, **EM)
    probes = {name: m for name, m in net.named_modules() if isinstance(m, Probe)}
    dense = {name for name in probes if re.fullmatch(r"(encoder|decoder)\.\d\.layer\d\.conv\.0", name)}
    assert len(dense) == layers * (3 + 2)  # 3 encoder stages, 2 decoder levels
    assert set(probes) - dense == ({"encoder.0.stem.0"} if stem_block is Probe else set())
    assert all(m.tag == "seen" for m in probes.values())  # block_kwargs reach every swapped conv
    assert probes["encoder.0.layer0.conv.0"].kernel_size == (3, 3, 1)
    assert probes["encoder.2.layer2.conv.0"].kernel_size == (3, 3, 3)
    plain = [m for m in net.modules() if isinstance(m, nn.Conv3d) and not isinstance(m, Probe)]
    assert all(m.kernel_size == (1, 1, 1) for m in plain if m is not net.encoder[0].stem[0])
    assert sum(isinstance(m, nn.Upsample) for m in net.modules()) == 2


def test_densenet_costs_about_what_unet_costs_at_recipe_widths():
    recipe = {"channels": [8, 16, 32, 64, 128], "strides": [1, 2, 2, 2, 2], "kernel_sizes": [3] * 5}
    unet, densenet = (build_net(arch, 2, 3, **recipe) for arch in ("unet", "densenet"))
    assert 0.5 < sum(p.numel() for p in densenet.parameters()) / sum(p.numel() for p in unet.parameters()) < 2


def test_densenet_rejects_inconsistent_stages():
    with pytest.raises(ValueError, match="one entry per stage"):
        build_net("densenet", 1, 1, channels=[4, 8], strides=[1], kernel_sizes=[3, 3])
    with pytest.raises(ValueError, match="growth needs one positive value per stage"):
        build_net("densenet", 1, 1, **TINY, growth=[4, 4])
