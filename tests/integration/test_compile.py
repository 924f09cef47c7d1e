"""torch.compile of a net (inductor builds C++ kernels: about a minute on 2 cores)."""

import pytest
import torch

from medseg import compat
from medseg.nets import build_net
from medseg.runtime import prepare_net

TINY = {"channels": [4, 8, 16], "strides": [1, 2, [2, 2, 1]], "kernel_sizes": [3, 3, [3, 3, 1]]}


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
    assert compat.is_compiled(compiled)  # compiled in place: same module, same state_dict keys
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)
