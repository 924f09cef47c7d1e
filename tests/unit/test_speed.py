"""The fast execution path (medseg.runtime, layout-keeping norm, fused CAKES, the channels-last CPU backwards) gives
the outputs and gradients of the plain path."""

from contextlib import contextmanager

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from medseg.blocks import make_conv3d
from medseg.nets import build_net
from medseg.ops.depthwise import DepthwiseConv3d
from medseg.ops.norm import InstanceNorm3d
from medseg.runtime import prepare_net, to_channels_last, use_channels_last

CL = torch.channels_last_3d
TINY = {"channels": [4, 8, 16], "strides": [1, 2, [2, 2, 1]], "kernel_sizes": [3, 3, [3, 3, 1]]}


@contextmanager
def torch_threads(count: int):
    """torch's intra-op threads set to `count` inside the block (oneDNN picks its kernels, and their output
    layouts, by the thread count), restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    with torch_threads(1), torch.inference_mode():
        net(torch.randn(2, 2, 64, 64, 64).contiguous(memory_format=CL))
    assert layouts == [True] * len(net.decoder)


@pytest.mark.parametrize("arch", ["unet", "densenet"])
@pytest.mark.parametrize("block", ["conv", "pmscn", "cakes", "sic"])
def test_channels_last_net_equals_the_plain_net(arch, block):
    torch.manual_seed(0)
    net = build_net(arch, 2, 3, block=block, **TINY).eval()
    keys = list(net.state_dict())
    x = torch.randn(2, 2, 16, 16, 9)
    # two threads: with one, oneDNN answers the 1×1×1 head in NCDHW (harmless: nothing runs after it; the decoder's
    # one-thread layout is test_the_decoder_stays_channels_last_on_one_thread's)
    with torch_threads(2), torch.inference_mode():
        reference = net(x)
        fast = prepare_net(net, "cpu", channels_last=True)(x)  # a contiguous input, as MONAI passes windows
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-4)
    assert list(net.state_dict()) == keys
    if arch == "unet":
        assert fast.is_contiguous(memory_format=CL)  # no layer fell back to NCDHW on the way


@pytest.mark.parametrize("block, kwargs", [("conv", {}), ("pmscn", {}), ("pmscn", {"inner_act": True}),
                                           ("cakes", {}), ("sic", {}),
                                           ("sic", {"connectivity": 0.5, "bias": True}), ("sic", {"spatial": "dwseq"})])
def test_channels_last_training_step_matches(block, kwargs):
    """The channels-last CPU training path runs its own backwards (instance norm, depthwise conv, SIC's fused
    norm + projection); a float64 NCDHW net, on torch's own kernels, is the reference."""
    torch.manual_seed(0)
    nets = [build_net("unet", 2, 3, block=block, block_kwargs=kwargs, **TINY) for _ in range(2)]
    nets[0].double()
    nets[1].load_state_dict(nets[0].state_dict())
    to_channels_last(nets[1])
    x = torch.randn(2, 2, 16, 16, 9) * 2 + 1
    nets[0](x.double()).square().mean().backward()
    nets[1](x).square().mean().backward()
    # float32 through a dozen norms: differences of 1e-4 against gradients of 0.1 on AVX-512 machines; a wrong
    # gradient is off by its own size
    scale = max(p.grad.abs().max().item() for p in nets[0].parameters())
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad.float(), rtol=1e-2, atol=2e-3 * scale)


@pytest.mark.parametrize("channels, kernel, stride", [(8, (3, 3, 3), (1, 1, 1)), (32, (3, 3, 3), (2, 2, 2)),
                                                      (12, (1, 1, 3), (1, 1, 2)), (5, (3, 3, 1), (1, 1, 1))])
def test_depthwise_conv_gradients(channels, kernel, stride):
    """Flipped-kernel input gradient and block-diagonal weight gradient (blocks of 16, 4 and 1 channels here)."""
    torch.manual_seed(0)
    conv = DepthwiseConv3d(channels, kernel, stride, tuple(k // 2 for k in kernel))
    x = torch.randn(2, channels, 9, 8, 7, dtype=torch.float64, requires_grad=True)
    weight = conv.weight.detach().double().requires_grad_()
    y = F.conv3d(x, weight, None, stride, conv.padding, groups=channels)  # torch's own depthwise backward
    grad = torch.randn_like(y)
    y.backward(grad)
    fast_x = x.detach().float().contiguous(memory_format=CL).requires_grad_()
    fast = conv(fast_x)
    assert fast.grad_fn.name() == "DepthwiseConvFunctionBackward"
    fast.backward(grad.float())
    torch.testing.assert_close(fast, y.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast_x.grad, x.grad.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv.weight.grad, weight.grad.float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("affine", [True, False])
def test_norm_backward_equals_torch_instance_norm(affine):
    torch.manual_seed(0)
    reference = nn.InstanceNorm3d(8, affine=affine).double()
    if affine:
        nn.init.uniform_(reference.weight)
        nn.init.uniform_(reference.bias)
    norm = InstanceNorm3d(8, affine=affine)
    norm.load_state_dict(reference.state_dict())
    x = torch.randn(2, 8, 9, 8, 7, dtype=torch.float64) * 3 + 1
    fast_x = x.float().contiguous(memory_format=CL).requires_grad_()
    out = norm(fast_x)
    assert out.grad_fn.name() == "ChannelsLastInstanceNormBackward"
    grad = torch.randn_like(x)
    out.backward(grad.float())
    x.requires_grad_()
    reference(x).backward(grad)
    torch.testing.assert_close(fast_x.grad, x.grad.float(), rtol=1e-4, atol=1e-4)
    for mine, theirs in zip(norm.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad.float(), rtol=1e-4, atol=1e-4)


def test_device_defaults():
    assert use_channels_last(None, "cpu") and not use_channels_last(None, "cuda")
    assert not use_channels_last(False, "cpu") and use_channels_last(True, "cuda")




@pytest.mark.parametrize("block, kwargs", [("conv", {}), ("sic", {}), ("pmscn", {"inner_act": True})])
def test_channels_last_training_accepts_meta_tensors(block, kwargs):
    """MONAI's loaders hand the net MetaTensors: the custom backwards must not turn the in-place activations after
    them into an autograd error."""
    from monai.data import MetaTensor

    torch.manual_seed(0)
    net = to_channels_last(build_net("unet", 2, 3, block=block, block_kwargs=kwargs, **TINY).train())
    net(MetaTensor(torch.randn(2, 2, 16, 16, 9))).square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("block", ["conv", "sic"])
def test_bfloat16_autocast_training_uses_torch_kernels(block):
    torch.manual_seed(0)
    net = to_channels_last(build_net("unet", 2, 3, block=block, **TINY).train())
    with torch.autocast("cpu", torch.bfloat16):
        out = net(torch.randn(2, 2, 16, 16, 9))
    seen, stack = set(), [out.grad_fn]
    while stack:  # every backward node of the graph
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            stack += [next_node for next_node, _ in node.next_functions]
    names = {node.name() for node in seen}
    assert "NativeGroupNormBackward0" in names and not any("ChannelsLast" in n or "Projection" in n for n in names)
    assert out.dtype == torch.bfloat16
    out.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("kwargs, stride", [({}, 1), ({"norm": False}, 1), ({"connectivity": 0.5, "bias": True}, 1),
                                            ({}, (2, 2, 1))])
@pytest.mark.parametrize("affine", [True, False])
def test_sic_folds_the_following_instance_norm(kwargs, stride, affine):
    """ConvNormAct(sic): the instance norm after SIC is folded into its projection (statistics from the depthwise
    output's Gram matrix); outputs and every gradient equal the unfolded float64 layer on torch's own kernels."""
    from medseg.nets.layers import ConvNormAct

    torch.manual_seed(0)
    reference = ConvNormAct("sic", 8, 8, 3, stride, kwargs).double()
    norm = reference[1]
    if affine:
        nn.init.uniform_(norm.weight, 0.5, 2)
        nn.init.uniform_(norm.bias, -1, 1)
    else:
        reference[1] = InstanceNorm3d(8, affine=False).double()
    layer = ConvNormAct("sic", 8, 8, 3, stride, kwargs)
    layer[1] = InstanceNorm3d(8, affine=affine)
    layer.load_state_dict(reference.state_dict())
    to_channels_last(layer)
    x = torch.randn(2, 8, 10, 9, 7, dtype=torch.float64) * 3 + torch.arange(8.0, dtype=torch.float64)[:, None, None,
                                                                                                          None]
    fast_x = x.float().contiguous(memory_format=CL).requires_grad_()
    out = layer(fast_x)
    assert out.grad_fn.next_functions[0][0].name() == "SpatialNormProjectionBackward"  # act ← the folded step
    x.requires_grad_()
    expected = reference(x)
    torch.testing.assert_close(out, expected.float(), rtol=1e-4, atol=1e-4)
    grad = torch.randn_like(expected)
    expected.backward(grad)
    out.backward(grad.float())
    torch.testing.assert_close(fast_x.grad, x.grad.float(), rtol=1e-4, atol=1e-4)
    for (name, mine), theirs in zip(layer.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad.float(), rtol=1e-3, atol=1e-4, msg=name)


def test_sic_leaves_the_norm_unfolded_in_small_layers():
    """Below FOLD_VOXELS_PER_CHANNEL voxels per channel (deep layers) the norm runs on its own."""
    from medseg.nets.layers import ConvNormAct

    layer = to_channels_last(ConvNormAct("sic", 32, 32, 3))
    out = layer(torch.randn(2, 32, 4, 4, 4).contiguous(memory_format=CL).requires_grad_())
    assert out.grad_fn.next_functions[0][0].name() == "ChannelsLastInstanceNormBackward"


@pytest.mark.parametrize("block, kwargs", [("cakes", {"bias": True}), ("cakes", {"ops": ["3x3x3", "1x1x3"]})])
def test_built_kernels_are_rebuilt_in_the_backward(block, kwargs):
    """CAKES's one-conv path keeps its parameters, not the kernel built from them, for the backward; gradients
    equal a float64 run of the per-op layer on torch's own autograd."""
    torch.manual_seed(0)
    layer = make_conv3d(block, 8, 12, 3, (2, 2, 1), **kwargs)
    reference = make_conv3d(block, 8, 12, 3, (2, 2, 1), **kwargs).double()
    reference.load_state_dict(layer.state_dict())
    to_channels_last(layer)
    x = torch.randn(2, 8, 9, 8, 7, dtype=torch.float64)
    fast_x = x.float().contiguous(memory_format=CL).requires_grad_()
    out = layer(fast_x)
    assert out.grad_fn.name() == "BuiltKernelConvBackward"
    x.requires_grad_()
    expected = reference(x)
    grad = torch.randn_like(expected)
    expected.backward(grad)
    out.backward(grad.float())
    torch.testing.assert_close(out, expected.float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast_x.grad, x.grad.float(), rtol=1e-4, atol=1e-4)
    for mine, theirs in zip(layer.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad.float(), rtol=1e-4, atol=1e-4)


def test_pmscn_streams_with_inner_norms_recompute_in_the_backward():
    """Channels-last CPU training: a stream with norm + act keeps only its input (the block's input, shared by the
    streams) for the backward; NCDHW (torch's own path) keeps the streams' intermediates. Same gradients."""
    torch.manual_seed(0)
    layer = make_conv3d("pmscn", 16, 16, 3, inner_act=True)
    x = torch.randn(2, 16, 12, 12, 12)

    def saved_bytes(inp: torch.Tensor) -> tuple[int, list[torch.Tensor]]:
        storages = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        layer.zero_grad()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = layer(inp)
        out.square().sum().backward()
        return sum(storages.values()), [inp.grad, *(p.grad for p in layer.parameters())]

    plain_bytes, plain_grads = saved_bytes(x.clone().requires_grad_())
    to_channels_last(layer)
    fast_bytes, fast_grads = saved_bytes(x.contiguous(memory_format=CL).requires_grad_())
    assert fast_bytes < 1.1 * x.nbytes < 0.5 * plain_bytes, (fast_bytes, x.nbytes, plain_bytes)
    for fast, plain in zip(fast_grads, plain_grads, strict=True):
        torch.testing.assert_close(fast, plain, rtol=1e-3, atol=1e-3)
