import pytest
import torch

from medseg.nets import build_net
from medseg.training.module import SegModule

NET = {"channels": [4, 8, 16, 32], "strides": [1, 2, 2, 2], "kernel_sizes": [3, 3, 3, 3]}
DS_ARGS = ["--model.deep_supervision=true", "--model.channels=[4,8,8,8]", "--model.strides=[1,2,2,2]",
           "--model.kernel_sizes=[3,3,3,3]"]


def module(arch: str = "unet", **kwargs) -> SegModule:
    return SegModule(["flair", "t1ce"], "brats2021", arch=arch, deep_supervision=True, **NET, **kwargs)


@pytest.mark.parametrize("arch", ["unet", "densenet"])
def test_heads_on_decoder_levels_below_full_resolution(arch):
    m = module(arch)
    outputs = m.training_outputs(torch.randn(2, 2, 32, 32, 32))
    # 4 stages: decoder levels at 1/4, 1/2, 1; the lowest is dropped as in nnU-Net
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 32, 32, 32), (2, 3, 16, 16, 16)]
    assert m.loss.weights == pytest.approx([2 / 3, 1 / 3])  # 1, 1/2, normalised
    m.eval()
    with torch.no_grad():
        assert m(torch.randn(1, 2, 32, 32, 32)).shape == (1, 3, 32, 32, 32)  # inference: one tensor, as without


def test_net_weights_load_into_a_net_without_deep_supervision():
    m = module()
    plain = build_net("unet", 2, 3, **NET)
    plain.load_state_dict(m.net.state_dict())  # strict: the heads are not part of the net
    x = torch.randn(1, 2, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), m.net.eval()(x))
