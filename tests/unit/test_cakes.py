"""CAKES semantics: closed-form costs (docs/specs/blocks-spec.md §3.8), equivalence with Conv3d, searched
configurations."""

import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from medseg.blocks import make_conv3d
from medseg.blocks.cakes import OPS, Cakes
from medseg.errors import MedsegError
from medseg.nets import build_net

NET = {"channels": [4, 8], "strides": [1, 2], "kernel_sizes": [3, 3]}


def conv_weights(block: nn.Module) -> int:
    return sum(m.weight.numel() for m in block.modules() if isinstance(m, nn.Conv3d))


@pytest.mark.parametrize("ops, params", [
    ({"3x3x3": 64}, 110_592),                                   # all 3D = Conv3d
    ("3d-2d", 73_728),                                          # 32/32
    ("3d-2d-1d", 54_144),                                       # 22/21/21
    ("all", 38_016),                                            # 10 3D, 9 on each plane and axis
    ({"3x3x1": 22, "3x1x3": 21, "1x3x3": 21}, 36_864),          # all 2D (ACS-like cost)
    ("2d-1d", 24_576),
    ({"1x1x3": 64}, 12_288),
], ids=str)
def test_parameter_counts_match_blocks_spec(ops, params):
    assert conv_weights(make_conv3d("cakes", 64, 64, ops=ops)) == params


def test_even_split_gives_the_remainder_to_the_first_op():
    assert make_conv3d("cakes", 64, 64, ops="3d-2d-1d").split == {"3x3x3": 22, "3x3x1": 21, "1x1x3": 21}
    assert sum(make_conv3d("cakes", 8, 8).split.values()) == 8


@pytest.mark.parametrize("stride", [1, 2, (1, 2, 2)], ids=str)
def test_all_3d_configuration_with_conv_weights_equals_conv3d(stride):
    block = make_conv3d("cakes", 5, 6, 3, stride, ops={"3x3x3": 6})
    conv = make_conv3d("conv", 5, 6, 3, stride)
    with torch.no_grad():
        block.convs[0].weight.copy_(conv.weight)
    x = torch.randn(2, 5, 9, 8, 7)
    torch.testing.assert_close(block(x), conv(x))


def test_each_channel_sees_only_its_sub_kernel():
    """Perturbing a voxel one step along S0 from the centre moves 3D, S0-plane and S0-axis channels only."""
    block = make_conv3d("cakes", 2, 7, ops="all")  # one channel per op, in OPS order
    x = torch.randn(1, 2, 5, 5, 5)
    bumped = x.clone()
    bumped[0, :, 1, 2, 2] += 1.0
    changed = (block(bumped) - block(x))[0, :, 2, 2, 2].abs() > 0
    assert changed.tolist() == ["3" == op.split("x")[0] for op in OPS]


def test_acs_like_split_equals_per_plane_convs():
    block = make_conv3d("cakes", 3, 6, ops="2d")
    x = torch.randn(1, 3, 7, 6, 5)
    parts = [F.conv3d(x, conv.weight, padding=conv.padding) for conv in block.convs]
    torch.testing.assert_close(block(x), torch.cat(parts, 1))
    assert [tuple(c.kernel_size) for c in block.convs] == [(3, 3, 1), (3, 1, 3), (1, 3, 3)]


def searched(net: nn.Module, split) -> dict:
    layers = {name: {"ops": split(m.out_channels), "in": m.in_channels, "out": m.out_channels}
              for name, m in net.named_modules() if isinstance(m, Cakes)}
    return {"schema": 1, "layers": layers}


def test_configuration_file_builds_exactly_that_network(tmp_path):
    template = build_net("unet", 2, 3, block="cakes", **NET)
    config = searched(template, lambda c: {"3x3x3": 1, "1x3x3": c - 3, "3x1x1": 2})
    path = tmp_path / "cakes.json"
    path.write_text(json.dumps(config))
    net = build_net("unet", 2, 3, block="cakes", block_kwargs={"config": str(path)}, **NET)
    layers = {n: m for n, m in net.named_modules() if isinstance(m, Cakes)}
    assert {n: m.split for n, m in layers.items()} == {n: e["ops"] for n, e in config["layers"].items()}
    assert net(torch.randn(1, 2, 12, 12, 12)).shape == (1, 3, 12, 12, 12)
    again = build_net("unet", 2, 3, block="cakes", block_kwargs={"config": config}, **NET)
    assert again.state_dict().keys() == net.state_dict().keys()


def test_configuration_that_does_not_fit_is_a_clear_error(tmp_path):
    template = build_net("unet", 2, 3, block="cakes", **NET)
    config = searched(template, lambda c: {"3x3x3": c})
    bad_sum = json.loads(json.dumps(config))
    next(iter(bad_sum["layers"].values()))["ops"]["3x3x3"] += 1
    with pytest.raises(MedsegError, match="summing to"):
        build_net("unet", 2, 3, block="cakes", block_kwargs={"config": bad_sum}, **NET)
    unknown = json.loads(json.dumps(config))
    unknown["layers"]["encoder.9.0.0"] = {"ops": {"3x3x3": 4}, "in": 4, "out": 4}
    with pytest.raises(MedsegError, match=r"unknown layers \['encoder.9.0.0'\]"):
        build_net("unet", 2, 3, block="cakes", block_kwargs={"config": unknown}, **NET)
    with pytest.raises(MedsegError, match="no entry for"):
        build_net("unet", 2, 3, block="cakes", block_kwargs={"config": config}, channels=[4, 8, 16],
                  strides=[1, 2, 2], kernel_sizes=[3, 3, 3])
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(MedsegError, match="broken.json: cannot read"):
        build_net("unet", 2, 3, block="cakes", block_kwargs={"config": str(tmp_path / "broken.json")}, **NET)


def test_unknown_op_or_space_is_rejected():
    with pytest.raises(MedsegError, match="unknown cakes op '5x5x5'; choose one of"):
        make_conv3d("cakes", 4, 4, ops={"5x5x5": 4})
    with pytest.raises(MedsegError, match="unknown cakes op space 'video'; choose one of"):
        make_conv3d("cakes", 4, 4, ops="video")
