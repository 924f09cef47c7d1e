import pytest
import torch

from medseg.blocks import BLOCKS
from medseg.nets import build_net


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
@pytest.mark.parametrize("block", BLOCKS)
def test_unet_keeps_input_size_and_trains(kwargs, size, block):
    net = build_net("unet", 2, 3, block=block, **kwargs)
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


def test_block_with_n2_replaces_each_double_conv_jointly():
    kwargs = {"channels": [4, 8, 16], "strides": [1, 2, 2], "kernel_sizes": [3, 3, 3]}
    single = build_net("unet", 2, 3, block="pmscn", **kwargs)
    joint = build_net("unet", 2, 3, block="pmscn", block_kwargs={"n": 2}, **kwargs)
    count = {name: sum(type(m).__name__ == "PmSCn" for m in net.modules()) for name, net in
             [("single", single), ("joint", joint)]}
    # 3 stages + 2 decoder levels; stage 0 starts with the plain stem, so its second conv stays a lone block
    assert count == {"single": 2 * 5 - 1, "joint": 1 + 4}
    first_stage_block = joint.encoder[0][1][0]
    assert len(first_stage_block.streams[0]) == 2  # n forced to 1 next to the stem: 2D, 1D (not 2D, 2D, 1D)
    assert len(joint.encoder[1][0][0].streams[0]) == 7  # 2D, norm, act, 2D, norm, act, 1D: it spans two layers
    assert joint(torch.randn(1, 2, 12, 10, 8)).shape == (1, 3, 12, 10, 8)
    assert sum(p.numel() for p in joint.parameters()) < sum(p.numel() for p in single.parameters())
