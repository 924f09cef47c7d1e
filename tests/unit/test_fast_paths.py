"""`medseg.ops.set_fast_paths(False)` runs every block on plain PyTorch ops, and the fast paths compute the same
outputs and gradients (to float rounding) as that reference."""

import pytest
import torch

import medseg.ops
from medseg.blocks import BLOCKS
from medseg.nets import build_net
from medseg.ops.norm import InstanceNorm3d
from medseg.runtime import to_channels_last

TINY = {"channels": [8, 16], "strides": [1, 2], "kernel_sizes": [3, 3]}
CL = torch.channels_last_3d


@pytest.fixture
def reference_path():
    """Fast paths off for the test's body; on again afterwards whatever happens."""
    previous = medseg.ops.set_fast_paths(False)
    yield
    medseg.ops.set_fast_paths(previous)


def step(net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Output and parameter gradients of one training-mode forward + backward."""
    net.zero_grad()
    y = net(x)
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    return y.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


def test_the_switch_returns_the_previous_setting():
    assert medseg.ops.fast_paths_enabled()
    assert medseg.ops.set_fast_paths(False) is True
    assert not medseg.ops.fast_paths_enabled()
    assert medseg.ops.set_fast_paths(True) is False


def test_the_switch_takes_the_norm_off_its_custom_backward():
    x = torch.randn(2, 8, 6, 6, 6, requires_grad=True).contiguous(memory_format=CL)
    norm = InstanceNorm3d(8, affine=True)
    assert "ChannelsLastInstanceNorm" in type(norm(x).grad_fn).__name__
    medseg.ops.set_fast_paths(False)
    try:
        assert "ChannelsLastInstanceNorm" not in type(norm(x).grad_fn).__name__
    finally:
        medseg.ops.set_fast_paths(True)


@pytest.mark.parametrize("block, kwargs", [("conv", {}), ("cakes", {}), ("pmscn", {}), ("pmscn", {"inner_act": False}),
                                           ("sic", {}), ("sic", {"connectivity": 0.5})],
                         ids=["conv", "cakes", "pmscn", "pmscn-linear", "sic", "sic-sparse"])
def test_blocks_agree_with_the_switch_on_and_off(block, kwargs):
    assert block in BLOCKS
    torch.manual_seed(0)
    net = to_channels_last(build_net("unet", 2, 3, block=block, block_kwargs=kwargs, **TINY).train())
    x = torch.randn(2, 2, 12, 12, 12).contiguous(memory_format=CL)
    fast_y, fast_grads = step(net, x)
    medseg.ops.set_fast_paths(False)
    try:
        ref_y, ref_grads = step(net, x)
    finally:
        medseg.ops.set_fast_paths(True)
    torch.testing.assert_close(fast_y, ref_y, rtol=1e-4, atol=1e-4)
    assert fast_grads.keys() == ref_grads.keys()
    # float32 through a dozen norms in a different summation order: differences of about 1e-4 of the largest
    # gradient (as tests/test_speed.py measures against float64); a wrong gradient is off by its own size
    scale = max(g.abs().max().item() for g in ref_grads.values())
    for name, grad in ref_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-2, atol=2e-3 * scale,
                                   msg=lambda m, n=name: f"{n}: {m}")


def test_reference_path_fixture_restores_the_switch(reference_path):
    assert not medseg.ops.fast_paths_enabled()
