"""The fast execution path (medseg.speed, layout-keeping norm, fused CAKES) gives the outputs of the plain path."""

import pytest
import torch
from torch import nn

from medseg.blocks import make_conv3d
from medseg.blocks.norm import InstanceNorm3d
from medseg.nets import build_net
from medseg.speed import prepare_net, to_channels_last, use_channels_last

CL = torch.channels_last_3d
TINY = {"channels": [4, 8, 16], "strides": [1, 2, [2, 2, 1]], "kernel_sizes": [3, 3, [3, 3, 1]]}


@pytest.mark.parametrize("affine", [True, False])
def test_norm_equals_torch_instance_norm_and_keeps_the_layout(affine):
    torch.manual_seed(0)
    reference = nn.InstanceNorm3d(6, affine=affine)
    if affine:
        nn.init.uniform_(reference.weight)
        nn.init.uniform_(reference.bias)
    norm = InstanceNorm3d(6, affine=affine)
    norm.load_state_dict(reference.state_dict())  # same keys: old checkpoints load
    x = torch.randn(2, 6, 9, 8, 7) * 3 + 1
    for inp in (x, x.contiguous(memory_format=CL)):
        out = norm(inp)
        torch.testing.assert_close(out, reference(x), rtol=1e-4, atol=1e-4)
        assert out.is_contiguous(memory_format=CL) == (inp is not x)


def test_fused_cakes_equals_separate_convs():
    torch.manual_seed(0)
    block = make_conv3d("cakes", 5, 14, (3, 3, 1), 2, bias=True)  # 7 ops, anisotropic kernel, strided
    x = torch.randn(2, 5, 9, 8, 7)
    separate = block(x)  # NCDHW: one conv per op
    fused = block.to(memory_format=CL)(x.contiguous(memory_format=CL))
    torch.testing.assert_close(fused, separate, rtol=1e-4, atol=1e-4)
    block.fuse_below = 0
    torch.testing.assert_close(block(x.contiguous(memory_format=CL)), separate, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("block", ["conv", "cakes"])
def test_the_decoder_stays_channels_last_on_one_thread(block):
    """With one thread oneDNN answers the 1×1×1 upsampling conv on the 4³ bottleneck in NCDHW; the decoder, and
    every CAKES layer in it, would then run in the slow layout."""
    net = to_channels_last(build_net("unet", 2, 3, block=block, channels=[4, 8, 16, 32, 64],
                                     strides=[1, 2, 2, 2, 2], kernel_sizes=[3] * 5).eval())
    layouts = []
    for dec in net.decoder:
        dec.register_forward_pre_hook(lambda m, i: layouts.append(i[0].is_contiguous(memory_format=CL)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            net(torch.randn(2, 2, 64, 64, 64).contiguous(memory_format=CL))
    finally:
        torch.set_num_threads(threads)
    assert layouts == [True] * len(net.decoder)


@pytest.mark.parametrize("arch", ["unet", "densenet"])
@pytest.mark.parametrize("block", ["conv", "pmscn", "cakes", "sic"])
def test_channels_last_net_equals_the_plain_net(arch, block):
    torch.manual_seed(0)
    net = build_net(arch, 2, 3, block=block, **TINY).eval()
    keys = list(net.state_dict())
    x = torch.randn(2, 2, 16, 16, 9)
    with torch.inference_mode():
        reference = net(x)
        fast = prepare_net(net, "cpu", channels_last=True)(x)  # a contiguous input, as MONAI passes windows
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-4)
    assert list(net.state_dict()) == keys
    if arch == "unet":
        assert fast.is_contiguous(memory_format=CL)  # no layer fell back to NCDHW on the way


def test_channels_last_training_step_matches():
    torch.manual_seed(0)
    nets = [build_net("unet", 2, 3, block="pmscn", **TINY) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    to_channels_last(nets[1])
    x = torch.randn(2, 2, 16, 16, 9)
    for net in nets:
        net(x).square().mean().backward()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-5)


def test_device_defaults():
    assert use_channels_last(None, "cpu") and not use_channels_last(None, "cuda")
    assert not use_channels_last(False, "cpu") and use_channels_last(True, "cuda")


@pytest.mark.slow  # inductor compiles C++ kernels: about a minute on 2 cores
def test_compiled_net_equals_eager(capsys):
    torch.manual_seed(0)
    net = build_net("unet", 2, 3, block="sic", **TINY).eval()
    x = torch.randn(1, 2, 16, 16, 9)
    with torch.inference_mode():
        reference = net(x)
        compiled = prepare_net(net, "cpu", channels_last=True, compile=True, example_shape=tuple(x.shape))
        out = compiled(x)
    assert "torch.compile warm-up:" in capsys.readouterr().err
    assert compiled._compiled_call_impl is not None  # compiled in place: same module, same state_dict keys
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)
