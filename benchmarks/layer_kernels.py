"""Does a block's FLOP saving become CPU time? One layer per block at each width the nets use, channels_last_3d.

For each (channels, size) of the brats recipe (8…128 channels at 64³…4³) and of the GPU recipe (32…320) it times,
per block, a forward and a forward + backward of one 2-patch batch, in channels_last_3d (the CPU default):
  - conv, pmscn, sic and cakes as built (CAKES on NCDHW input: one conv per op, concatenated);
  - PmSCn with linear streams run as streams (`pmscn linear streams`) and as the one Conv3d they equal (`pmscn
    linear fused`), and with norm + act inside the streams (`pmscn inner-act`, the default before checkpoint
    format 3); `pmscn` as built (`inner_act="wide"`) is the fused one where that is cheaper, inner-act elsewhere;
  - CAKES on channels_last input, where it runs all its ops as one conv of zero-padded sub-kernels (below
    `Cakes.FUSE_BELOW` output channels: every width), and `cakes separate`: the per-op convs forced on the same input;
  - SIC followed by the instance norm every net puts after a block, as two steps (`sic + norm`) and with the norm
    folded into SIC's projection (`sic + norm folded`, `SIC.forward_normed`, what `ConvNormAct` runs);
  - the two kernels medseg gives its own channels-last CPU backward, against torch's: instance norm
    (`norm torch` = nn.GroupNorm with one channel per group, `norm medseg` = medseg's InstanceNorm3d) and the 3×3×3
    depthwise conv of SIC (`depthwise torch` = nn.Conv3d with groups=C, `depthwise medseg` = DepthwiseConv3d).
Rounds are interleaved and the minimum is kept (the machine is shared); prints a markdown table the README quotes.

    python benchmarks/layer_kernels.py [--threads 2] [--rounds 5] [--widths recipe gpu] [--rows conv sic …]
"""

import argparse
import time
from collections.abc import Callable

import torch

from medseg.blocks import make_conv3d
from medseg.ops.depthwise import DepthwiseConv3d
from medseg.ops.norm import InstanceNorm3d

CL = torch.channels_last_3d
SHAPES = {"recipe": [(8, 64), (16, 32), (32, 16), (64, 8), (128, 4)],
          "gpu": [(32, 64), (64, 32), (128, 16), (256, 8), (320, 4)]}


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class ThenNorm(torch.nn.Module):
    """A block, then an affine instance norm: as two steps, or folded into the block (`forward_normed`)."""

    def __init__(self, block: torch.nn.Module, fold: bool):
        super().__init__()
        self.block, self.norm, self.fold = block, InstanceNorm3d(block.project.weight.shape[0], affine=True), fold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block.forward_normed(x, self.norm) if self.fold else self.norm(self.block(x))


def variants(channels: int) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    built = {kind: make_conv3d(kind, channels, channels).to(memory_format=CL) for kind in ("conv", "pmscn", "sic")}
    built["cakes"] = make_conv3d("cakes", channels, channels).to(memory_format=CL)
    separate = make_conv3d("cakes", channels, channels).to(memory_format=CL)
    separate.load_state_dict(built["cakes"].state_dict())
    separate.fuse_below = 0  # never fuse: the per-op convs
    built["cakes separate"] = separate
    for name, fuse in [("pmscn linear streams", False), ("pmscn linear fused", True)]:
        built[name] = make_conv3d("pmscn", channels, channels, inner_act=False)
        built[name].fuse = fuse
    built["pmscn linear fused"].load_state_dict(built["pmscn linear streams"].state_dict())
    built["pmscn inner-act"] = make_conv3d("pmscn", channels, channels, inner_act=True)
    built["sic + norm"] = ThenNorm(built["sic"], fold=False)
    built["sic + norm folded"] = ThenNorm(built["sic"], fold=True)
    built["norm torch"] = torch.nn.GroupNorm(channels, channels)
    built["norm medseg"] = InstanceNorm3d(channels, affine=True)
    built["depthwise torch"] = torch.nn.Conv3d(channels, channels, 3, padding=1, groups=channels, bias=False)
    built["depthwise medseg"] = DepthwiseConv3d(channels, (3, 3, 3), (1, 1, 1), (1, 1, 1))
    return {name: block.to(memory_format=CL) for name, block in built.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--widths", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--rows", nargs="+", help="only these rows, e.g. conv 'sic + norm' (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| widths | layer (batch 2) | block | forward ms | forward + backward ms |\n|---|---|---|---:|---:|")
    for widths in args.widths:
        for channels, size in SHAPES[widths]:
            x = torch.randn(2, channels, size, size, size).contiguous(memory_format=CL)
            blocks = variants(channels)
            with torch.no_grad():
                torch.testing.assert_close(blocks["cakes"](x), blocks["cakes separate"](x), rtol=1e-4, atol=1e-4)
                torch.testing.assert_close(blocks["pmscn linear fused"](x), blocks["pmscn linear streams"](x),
                                           rtol=1e-4, atol=1e-4)
                torch.testing.assert_close(blocks["sic + norm folded"](x), blocks["sic + norm"](x), rtol=1e-4,
                                           atol=1e-4)
            if unknown := set(args.rows or []) - set(blocks):
                parser.error(f"unknown --rows {sorted(unknown)}; rows are {sorted(blocks)}")
            best = {name: [float("inf"), float("inf")] for name in args.rows or blocks}
            for _ in range(args.rounds):
                for name in best:
                    block = blocks[name]
                    with torch.no_grad():
                        best[name][0] = min(best[name][0], seconds(lambda b=block, x=x: b(x)))
                    xg = x.detach().requires_grad_()
                    best[name][1] = min(best[name][1], seconds(lambda b=block, xg=xg: b(xg).sum().backward()))
            for name, (fwd, train) in best.items():
                print(f"| {widths} | {channels}→{channels} @ {size}³ | {name} | {fwd * 1e3:.1f} | {train * 1e3:.1f} |",
                      flush=True)


if __name__ == "__main__":
    main()
