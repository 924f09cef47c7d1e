"""SIC semantics: closed-form parameter counts (docs/specs/blocks-spec.md §4) and channel independence of the spatial
part."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from medseg.blocks import make_conv3d
from medseg.blocks.sic import topology


def weights(block: nn.Module) -> int:
    return sum(p.numel() for name, p in block.named_parameters() if "norm" not in name and "up.0" not in name)


@pytest.mark.parametrize("kwargs, params", [
    ({}, 5_824),                                      # depthwise 3³ + pointwise
    ({"spatial": "dwseq"}, 4_672),                    # three 1D depthwise + pointwise
    ({"connectivity": 0.5}, 3_776),
    ({"connectivity": 0.25}, 2_752),
    ({"bottleneck": True}, 1_728 + 4_096 + 512),      # + depthwise 2×2×2 transposed conv
], ids=str)
def test_parameter_counts_match_blocks_spec(kwargs, params):
    assert weights(make_conv3d("sic", 64, 64, **kwargs)) == params


def test_full_connectivity_is_depthwise_then_pointwise():
    block = make_conv3d("sic", 6, 5, 3, 2, norm=False)
    x = torch.randn(2, 6, 9, 8, 7)
    dw = block.spatial.weight
    pw = block.project.weight[:, :, None, None, None]
    expected = F.conv3d(F.conv3d(x, dw, stride=2, padding=1, groups=6), pw)
    torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize("channels, connectivity, window", [(64, 0.25, 16), (64, 0.5, 32), (16, 0.25, 4)])
def test_topological_window_has_exactly_t_squared_inputs_per_output(channels, connectivity, window):
    index = topology(channels, connectivity)
    assert index.shape == (channels, window)
    assert all(len(set(row.tolist())) == window for row in index)
    # each input feeds the same number of outputs: the windows tile the channel grid evenly
    assert torch.bincount(index.flatten(), minlength=channels).unique().tolist() == [window]


def test_topological_projection_only_mixes_neighbouring_channels():
    block = make_conv3d("sic", 16, 16, connectivity=0.25, norm=False)
    x = torch.randn(1, 16, 6, 6, 6)
    bumped = x.clone()
    bumped[:, 5] += 1.0
    changed = (block(bumped) - block(x)).abs().flatten(2).amax(-1)[0] > 0
    assert changed.sum() == 4
    assert set(changed.nonzero().flatten().tolist()) == {p for p in range(16) if 5 in block.project.index[p]}


def test_spatial_part_keeps_channels_independent():
    block = make_conv3d("sic", 4, 4, norm=False)
    x = torch.randn(1, 4, 6, 6, 6)
    bumped = x.clone()
    bumped[:, 2] += torch.randn(6, 6, 6)
    diff = (block.spatial(bumped) - block.spatial(x)).abs().flatten(2).amax(-1)[0]
    assert diff[2] > 0 and (diff[[0, 1, 3]] == 0).all()


def test_bottleneck_only_in_wide_layers_and_rejects_bad_connectivity():
    assert make_conv3d("sic", 128, 128, bottleneck=True).up is not None
    assert make_conv3d("sic", 16, 16, bottleneck=True).up is None
    with pytest.raises(ValueError, match="connectivity"):
        make_conv3d("sic", 8, 8, connectivity=0)
