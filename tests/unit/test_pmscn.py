"""PmSCn semantics: closed-form parameter counts (docs/specs/blocks-spec.md §2.4) and the decomposition view (§2.3)."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from medseg.blocks import make_conv3d


def conv_weights(block: nn.Module) -> int:
    return sum(m.weight.numel() for m in block.modules() if isinstance(m, nn.Conv3d))


@pytest.mark.parametrize("kwargs, params", [
    ({"m": 1, "width": 64}, 49_152),                                   # P1SC1
    ({"m": 3, "width": 64}, 147_456),                                  # P3SC1 at full width costs more than 3D
    ({"m": 3, "width": 21}, 48_384),
    ({"m": 3, "merge": "concat"}, 40_962),                             # stream widths 22/21/21
    ({"m": 3, "n": 2, "width": 21}, 60_291),                           # P3SC2 replaces two 3D convs
    ({"m": 1, "n": 2, "width": 64, "k1d": 3}, 86_016),
    ({"m": 1, "n": 2, "width": 64}, 94_208),                           # m = 1: k1d = n(k−1)+1 = 5
], ids=str)
def test_parameter_counts_match_blocks_spec(kwargs, params):
    assert conv_weights(make_conv3d("pmscn", 64, 64, **kwargs)) == params


def test_default_width_is_a_third_of_the_outputs():
    block = make_conv3d("pmscn", 64, 64)
    assert [s[0].out_channels for s in block.streams] == [22, 22, 22]
    assert conv_weights(block) == 3 * (9 * 64 * 22 + 3 * 22 * 64)


@pytest.mark.parametrize("stride", [1, 2, (2, 2, 1)], ids=str)
def test_linear_stream_from_svd_reproduces_conv3d(stride):
    """A linear 2D→1D stream of width k·C_out holds any 3×3×3 kernel exactly (rank of the mode-S2 unfolding)."""
    torch.manual_seed(0)
    c_in, c_out, k = 3, 4, 3
    w = torch.randn(c_out, c_in, k, k, k, dtype=torch.float64)
    # W[o, i, x, y, z] = Σ_j B[o, j, z] A[j, i, x, y]: factor the (o, z) × (i, x, y) matrix
    mat = w.permute(0, 4, 1, 2, 3).reshape(c_out * k, c_in * k * k)  # (C_out·k, C_in·k²)
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    width = c_out * k
    a = vh.reshape(width, c_in, k, k, 1)                                          # 2D (x, y) kernels
    b = (u * s).reshape(c_out, k, width).permute(0, 2, 1).reshape(c_out, width, 1, 1, k)  # 1D (z) kernels
    block = make_conv3d("pmscn", c_in, c_out, 3, stride, m=1, width=width, inner_act=False).double()
    conv2d, conv1d = block.streams[0]
    with torch.no_grad():
        conv2d.weight.copy_(a)
        conv1d.weight.copy_(b)
    x = torch.randn(2, c_in, 9, 8, 7, dtype=torch.float64)
    expected = F.conv3d(x, w, stride=stride, padding=1)
    torch.testing.assert_close(block(x), expected, rtol=1e-9, atol=1e-9)


def test_streams_filter_different_planes():
    block = make_conv3d("pmscn", 4, 4, m=3)
    planes = [tuple(s[0].kernel_size) for s in block.streams]
    lines = [tuple(s[-1].kernel_size) for s in block.streams]
    assert planes == [(3, 3, 1), (1, 3, 3), (3, 1, 3)]
    assert lines == [(1, 1, 3), (3, 1, 1), (1, 3, 1)]


def test_r2plus1d_stride_placement():
    block = make_conv3d("pmscn", 4, 4, 3, (2, 2, 1), m=1)
    first, *_, last = block.streams[0]
    assert tuple(first.stride) == (2, 2, 1) and tuple(last.stride) == (1, 1, 1)
    block = make_conv3d("pmscn", 4, 4, 3, 2, m=1)
    first, *_, last = block.streams[0]
    assert tuple(first.stride) == (2, 2, 1) and tuple(last.stride) == (1, 1, 2)


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError, match="m must be 1, 2 or 3"):
        make_conv3d("pmscn", 4, 4, m=4)
    with pytest.raises(ValueError, match="merge"):
        make_conv3d("pmscn", 4, 4, merge="max")
    with pytest.raises(ValueError, match="inner_act must be true, false or 'wide'"):
        make_conv3d("pmscn", 4, 4, inner_act="narrow")


@pytest.mark.parametrize("kernel, stride, kwargs", [
    (3, 1, {}), (3, 1, {"m": 1}), (3, 1, {"m": 1, "k1d": 5}), (3, 1, {"m": 2, "axis": 0}),
    (3, 1, {"merge": "concat", "bias": True}), (3, 1, {"bias": True}), (3, 2, {}), ((3, 3, 1), (2, 2, 1), {}),
], ids=str)
def test_fused_linear_block_equals_its_streams(kernel, stride, kwargs):
    """The one Conv3d a linear n = 1 block runs as gives the streams' output and the streams' weight gradients."""
    torch.manual_seed(0)
    block = make_conv3d("pmscn", 8, 12, kernel, stride, inner_act=False, **kwargs).double()
    x = torch.randn(2, 8, 9, 10, 11, dtype=torch.float64, requires_grad=True)
    fused = block.fused(x)
    block.fuse = False
    streams = block(x)
    torch.testing.assert_close(fused, streams, rtol=1e-10, atol=1e-10)
    inputs = [x, *block.parameters()]
    grads = torch.autograd.grad(streams.square().sum(), inputs)
    for got, expected in zip(torch.autograd.grad(fused.square().sum(), inputs), grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("c_in, c_out, stride, kwargs, fuse", [
    (8, 8, 1, {}, True), (16, 8, 1, {}, True), (16, 32, 2, {}, True),     # streams of 3–11 channels: one conv
    (32, 32, 1, {}, False), (64, 32, 1, {}, False),                       # ≥ 11-channel streams do fewer MACs
    (32, 32, 1, {"inner_act": False}, False),
    (8, 8, 1, {"inner_act": True}, False), (8, 8, 1, {"n": 2, "inner_act": False}, False),  # not one linear map
], ids=str)
def test_narrow_linear_blocks_run_as_one_conv(c_in, c_out, stride, kwargs, fuse):
    assert make_conv3d("pmscn", c_in, c_out, 3, stride, **kwargs).fuse is fuse


@pytest.mark.parametrize("kwargs, narrow_layers, wide_layers", [
    ({}, 2, 4), ({"inner_act": "wide"}, 2, 4),  # 2D, 1D (fused) | 2D, norm, act, 1D
    ({"inner_act": False}, 2, 2), ({"inner_act": True}, 4, 4), ({"n": 2}, 7, 7),
], ids=str)
def test_default_keeps_the_nonlinearity_where_the_streams_are_the_cheaper_form(kwargs, narrow_layers, wide_layers):
    assert len(make_conv3d("pmscn", 8, 8, **kwargs).streams[0]) == narrow_layers
    assert len(make_conv3d("pmscn", 64, 64, **kwargs).streams[0]) == wide_layers
