"""The block contract, driven by the registry: a block added to BLOCKS is tested here for free."""


import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from medseg.blocks import BLOCKS, make_conv3d
from medseg.errors import MedsegError

# every block with its main options: what the contract must hold for
VARIANTS = [(kind, {}) for kind in BLOCKS] + [
    ("pmscn", {"n": 2}), ("pmscn", {"m": 1}), ("pmscn", {"m": 1, "n": 2}), ("pmscn", {"merge": "concat"}),
    ("cakes", {"ops": "3d-2d-1d"}), ("cakes", {"ops": "2d"}), ("cakes", {"ops": ["3x3x3", "1x3x1"]}),
    ("sic", {"spatial": "dwseq"}), ("sic", {"connectivity": 0.5}), ("sic", {"bottleneck": True,
                                                                           "bottleneck_channels": 4}),
]
IDS = [f"{k}-{'-'.join(f'{a}={b}' for a, b in kw.items()) or 'default'}" for k, kw in VARIANTS]
BUDGET = {"conv": 1.0, "pmscn": 0.60, "cakes": 0.60, "sic": 0.10}  # params of a 64→64 3×3×3 layer vs Conv3d


def ceil_shape(size, stride):
    s = (stride,) * 3 if isinstance(stride, int) else stride
    return tuple(-(-n // k) for n, k in zip(size, s, strict=True))


@pytest.mark.parametrize("kind, kwargs", VARIANTS, ids=IDS)
@pytest.mark.parametrize("stride, kernel", [(1, 3), (2, 3), ((1, 2, 2), 3), ((2, 2, 1), 3), ((2, 2, 1), (3, 3, 1)),
                                            ((1, 2, 2), (1, 3, 3))], ids=str)
@pytest.mark.parametrize("size", [(12, 10, 8), (13, 9, 7)], ids=str)
def test_shape_matches_conv3d(kind, kwargs, stride, kernel, size):
    block = make_conv3d(kind, 5, 6, kernel, stride, **kwargs)
    assert block(torch.randn(2, 5, *size)).shape == (2, 6, *ceil_shape(size, stride))


@pytest.mark.parametrize("kind, kwargs", VARIANTS, ids=IDS)
def test_gradients_reach_every_parameter(kind, kwargs):
    block = make_conv3d(kind, 6, 6, 3, 2, **kwargs)
    block(torch.randn(2, 6, 9, 8, 7)).square().mean().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", BLOCKS)
def test_parameter_budget_and_fewer_flops_than_conv(kind):
    def cost(block):
        with FlopCounterMode(display=False) as counter:
            block(torch.randn(1, 64, 16, 16, 16))
        return sum(p.numel() for p in block.parameters()), counter.get_total_flops()

    params, flops = cost(make_conv3d(kind, 64, 64))
    conv_params, conv_flops = cost(make_conv3d("conv", 64, 64))
    assert conv_params == 110_592
    assert params <= BUDGET[kind] * conv_params
    assert flops < conv_flops or kind == "conv"


def test_unknown_block_names_are_listed():
    expected = r"unknown block 'pmsnc'; did you mean 'pmscn'\? choose one of \['cakes', 'conv', 'pmscn', 'sic'\]"
    with pytest.raises(MedsegError, match=expected):
        make_conv3d("pmsnc", 4, 4)


def test_factory_accepts_a_class():
    class Probe(nn.Conv3d):
        def __init__(self, i, o, k, s, *, bias):
            super().__init__(i, o, k, s, padding=1, bias=bias)

    assert isinstance(make_conv3d(Probe, 2, 3), Probe)


@pytest.mark.parametrize("kind", BLOCKS)
def test_bias_is_optional(kind):
    with_bias = sum(p.numel() for p in make_conv3d(kind, 8, 8, bias=True).parameters())
    without = sum(p.numel() for p in make_conv3d(kind, 8, 8).parameters())
    assert with_bias == without + 8
