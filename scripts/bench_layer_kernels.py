"""Does a block's FLOP saving become CPU time? One layer, three ways of running the same maths.

For each width C (at the resolution that width has in the brats recipe) it times, per block:
  - the block as built (NCDHW), and in channels_last_3d memory format;
  - CAKES with all ops fused into one conv (each sub-kernel zero-padded to 3×3×3: one big kernel, conv FLOPs);
  - a (1, 3, 3) planar conv as a batched conv2d over S0 slices (a free view in channels_last_3d).
Prints a markdown table (median ms of several runs, same threads); the README quotes it.

    python scripts/bench_layer_kernels.py [--threads 2] [--repeats 7]
"""

import argparse
import time
from functools import partial

import torch
from torch.nn import functional as F

from medseg.blocks import make_conv3d
from medseg.blocks.cakes import Cakes
from medseg.blocks.size import pad_kernel


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1000


def fused_cakes(block: Cakes) -> torch.Tensor:
    """One 3×3×3 weight holding every op's sub-kernel, zero elsewhere (same outputs, conv FLOPs)."""
    return torch.cat([pad_kernel(conv.weight, (3, 3, 3)) for conv in block.convs])  # (C_out, C_in, 3, 3, 3)


def planar_as_conv2d(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(1, 3, 3) conv as conv2d over the N·S0 slices; in channels_last_3d the reshape is a view."""
    n, c, s0, s1, s2 = x.shape
    y = F.conv2d(x.permute(0, 2, 1, 3, 4).reshape(n * s0, c, s1, s2), weight[:, :, 0], padding=1)
    return y.reshape(n, s0, -1, s1, s2).permute(0, 2, 1, 3, 4)  # (N, C_out, S0, S1, S2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    blocks = [("conv", {}), ("pmscn", {}), ("pmscn", {"m": 1}), ("cakes", {}), ("cakes", {"ops": "3d-2d-1d"}),
              ("cakes", {"ops": "2d"}), ("sic", {})]
    print("| layer (batch 2) | block | NCDHW ms | channels_last_3d ms | notes |\n|---|---|---:|---:|---|")
    for channels, size in [(8, 64), (32, 32), (128, 16)]:
        x = torch.randn(2, channels, size, size, size)
        xl = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.inference_mode():
            for kind, kwargs in blocks:
                block = make_conv3d(kind, channels, channels, **kwargs).eval()
                plain = median_ms(partial(block, x), args.repeats)
                block = block.to(memory_format=torch.channels_last_3d)
                last = median_ms(partial(block, xl), args.repeats)
                note = ""
                if isinstance(block, Cakes) and len(block.convs) > 1:
                    w = fused_cakes(block).contiguous(memory_format=torch.channels_last_3d)
                    torch.testing.assert_close(F.conv3d(xl, w, padding=1), block(xl), rtol=1e-3, atol=1e-3)
                    fused = median_ms(partial(F.conv3d, xl, w, padding=1), args.repeats)
                    note = f"fused into one 3×3×3 conv: {fused:.1f}"
                label = kind + (f" {kwargs}" if kwargs else "")
                print(f"| {channels}→{channels} @ {size}³ | {label} | {plain:.1f} | {last:.1f} | {note} |", flush=True)
            w = torch.randn(channels, channels, 1, 3, 3).contiguous(memory_format=torch.channels_last_3d)
            conv3d = median_ms(partial(F.conv3d, xl, w, padding=(0, 1, 1)), args.repeats)
            conv2d = median_ms(partial(planar_as_conv2d, xl, w), args.repeats)
            print(f"| {channels}→{channels} @ {size}³ | (1,3,3) conv | — | {conv3d:.1f} | "
                  f"as batched conv2d: {conv2d:.1f} |")


if __name__ == "__main__":
    main()
