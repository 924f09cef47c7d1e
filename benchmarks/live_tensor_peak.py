"""Peak memory of the tensors a UNet makes, per block, apart from what the allocator and oneDNN keep around them.

`medseg bench` reports the resident-set peak of a whole prediction or training step, which also holds malloc's
arenas and oneDNN's primitive caches and scratchpads (more distinct conv shapes, more of them). This counts only
tensor storage: a TorchDispatchMode adds every new storage an op returns and a finalizer subtracts it when it is
freed, so the peak is what the net's tensors need. One 2×64³ window batch forward (prediction) and one forward +
backward of a 2-patch batch (training) at the brats recipe's widths, channels_last_3d as on the CPU.

    python benchmarks/live_tensor_peak.py
"""

import copy
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from medseg.bench.run import IN_CHANNELS, OUT_CHANNELS, RECIPE, load_recipe
from medseg.blocks import BLOCKS
from medseg.nets import build_net
from medseg.runtime import prepare_net, to_channels_last


class LiveTensors(TorchDispatchMode):
    """Bytes of tensor storage alive now (`live`) and at most (`peak`) since entering."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.seen: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and (storage := t.untyped_storage()).data_ptr() not in self.seen:
                self.seen.add(storage.data_ptr())
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
                weakref.finalize(storage, self.free, storage.data_ptr(), storage.nbytes())
        return out

    def free(self, pointer: int, nbytes: int) -> None:
        self.seen.discard(pointer)
        self.live -= nbytes


def predict(net: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.inference_mode():
        net(x)


def train_step(net: torch.nn.Module, x: torch.Tensor) -> None:
    net(x).square().mean().backward()
    net.zero_grad(set_to_none=True)


def peak_mib(run, net: torch.nn.Module, x: torch.Tensor) -> float:
    run(net, x)  # warm-up: lazily made buffers are not counted
    with LiveTensors() as counter:
        run(net, x)
    return counter.peak / 2**20


def main() -> None:
    torch.set_num_threads(2)
    net_kwargs, patch, _ = load_recipe(RECIPE)
    x = torch.randn(2, IN_CHANNELS, *patch)
    print("| block | prediction MiB (one 2-window batch) | training MiB (forward + backward, 2 patches) |")
    print("|---|---:|---:|")
    for block in BLOCKS:
        torch.manual_seed(0)
        net = build_net("unet", IN_CHANNELS, OUT_CHANNELS, block=block, **net_kwargs)
        training = to_channels_last(copy.deepcopy(net).train())
        predicting = prepare_net(net.eval(), "cpu", channels_last=True)
        print(f"| {block} | {peak_mib(predict, predicting, x):.1f} | {peak_mib(train_step, training, x):.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
