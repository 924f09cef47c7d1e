import pytest
import torch
from torch import nn

from medseg.blocks import BLOCKS, make_conv3d
from medseg.nets import build_net


@pytest.mark.parametrize("stride", [1, 2, (1, 2, 2), (2, 2, 1)], ids=str)
@pytest.mark.parametrize("size", [(16, 16, 16), (15, 17, 9)], ids=str)
def test_conv_block_has_same_padding(stride, size):
    conv = make_conv3d("conv", 3, 5, 3, stride)
    out = conv(torch.randn(1, 3, *size))
    s = (stride,) * 3 if isinstance(stride, int) else stride
    assert out.shape == (1, 5, *[-(-n // k) for n, k in zip(size, s, strict=True)])


def test_unknown_block_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown block 'pmsnc'.*\['conv'\]"):
        make_conv3d("pmsnc", 4, 4)


def test_factory_accepts_a_class():
    class Probe(nn.Conv3d):
        def __init__(self, i, o, k, s, *, bias):
            super().__init__(i, o, k, s, padding=1, bias=bias)

    assert isinstance(make_conv3d(Probe, 2, 3), Probe)
    assert set(BLOCKS) == {"conv"}


@pytest.mark.parametrize(
    "kwargs, size",
    [
        ({"channels": [4, 8, 16], "strides": [1, 2, 2], "kernel_sizes": [3, 3, 3]}, (16, 20, 12)),
        ({"channels": [4, 8, 16], "strides": [1, [2, 2, 1], [2, 2, 2]],
          "kernel_sizes": [[3, 3, 1], [3, 3, 1], 3]}, (32, 32, 6)),
        ({"channels": [4, 8], "strides": [1, 2], "kernel_sizes": [3, 3]}, (13, 11, 9)),
    ],
    ids=["isotropic", "anisotropic-em", "odd-size"],
)
def test_unet_keeps_input_size_and_trains(kwargs, size):
    net = build_net("unet", 2, 3, **kwargs)
    x = torch.randn(2, 2, *size)
    y = net(x)
    assert y.shape == (2, 3, *size)
    y.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_unet_stages_must_agree():
    with pytest.raises(ValueError, match="one entry per stage"):
        build_net("unet", 1, 1, channels=[4, 8], strides=[1], kernel_sizes=[3, 3])
    with pytest.raises(ValueError, match="choose one of"):
        build_net("vnet", 1, 1)
