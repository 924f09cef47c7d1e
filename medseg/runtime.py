"""The device a net runs on (`pick_device`, `autocast_dtype`) and running it the fast way there: channels_last_3d
memory format and, when asked, `torch.compile`.

One entry point, `prepare_net`, used by prediction (and `medseg bench`); training applies the same two switches
through `SegModule(channels_last=…, compile=…)`. Both keep the module and its state_dict keys unchanged
(`nn.Module.compile` compiles in place), so checkpoints load either way.

Defaults per device, from `medseg bench` (docs/dev/cpu-performance.md): channels_last_3d is faster on the CPU (oneDNN
runs NDHWC convs back to back now that the norms keep the layout); on CUDA it is off until measured there
(`benchmarks/bench_gpu.sh`). Compilation is off by default: its warm-up costs seconds to minutes per input shape.
"""

import sys
import time
import warnings

import torch
from torch import nn

from medseg import compat
from medseg.errors import MedsegError

CHANNELS_LAST_DEFAULT = {"cpu": True, "cuda": False}


def use_channels_last(setting: bool | None, device: torch.device | str) -> bool:
    """An explicit setting, or the faster layout measured for this device type (None: the default)."""
    if setting is not None:
        return setting
    return CHANNELS_LAST_DEFAULT.get(torch.device(device).type, False)


def _input_to_channels_last(module: nn.Module, args: tuple) -> tuple:
    x, *rest = args
    if isinstance(x, torch.Tensor) and x.dim() == 5:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    return (x, *rest)


def to_channels_last(net: nn.Module) -> nn.Module:
    """Weights in channels_last_3d, and every 5D input converted on the way in (a forward pre-hook, so callers such
    as MONAI's sliding window, which stacks windows contiguously, need not know)."""
    net.to(memory_format=torch.channels_last_3d)
    if not getattr(net, "_medseg_channels_last", False):
        net.register_forward_pre_hook(_input_to_channels_last)
        net._medseg_channels_last = True
    return net


def compile_net(net: nn.Module, example: torch.Tensor | None = None,
                autocast: torch.dtype | None = None) -> tuple[nn.Module, float | None]:
    """Compile `net` in place; with an example input, compile now (one forward, no gradients) and return the
    warm-up seconds. A net that does not compile is left eager with a warning (warm-up None)."""
    net.compile()
    if example is None:
        return net, None
    start = time.perf_counter()
    try:
        with torch.inference_mode(), torch.autocast(example.device.type, autocast, enabled=autocast is not None):
            net(example)
    except Exception as e:  # inductor/dynamo failures surface as many exception types
        warnings.warn(f"torch.compile failed, running eagerly ({type(e).__name__}: {str(e).splitlines()[0]})",
                      stacklevel=2)
        compat.uncompile(net)
        return net, None
    return net, time.perf_counter() - start


def prepare_net(net: nn.Module, device: torch.device | str, channels_last: bool | None = None,
                compile: bool = False, example_shape: tuple[int, ...] | None = None,
                autocast: torch.dtype | None = None) -> nn.Module:
    """`net` in eval mode on `device`, in the faster memory format, compiled when asked.

    With `compile` and `example_shape` (e.g. (sw_batch_size, C, *patch)) the compilation runs here and its warm-up
    time is printed to stderr, so it is not mistaken for prediction time; `autocast` is the dtype prediction uses.
    """
    device = torch.device(device)
    net = net.to(device).eval()
    if use_channels_last(channels_last, device):
        to_channels_last(net)
    if compile:
        example = None if example_shape is None else torch.zeros(example_shape, device=device)
        net, seconds = compile_net(net, example, autocast)
        if seconds is not None:
            print(f"torch.compile warm-up: {seconds:.1f} s", file=sys.stderr)
    return net


def pick_device(device: str) -> torch.device:
    """`auto` is the GPU when PyTorch sees one, else the CPU; asking for `cuda` without one is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise MedsegError("--device cuda: no CUDA device is available")
    return torch.device(device)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA only: bfloat16 where the GPU has it (its range never overflows), else float16.
    None (full precision) on the CPU, where autocast is slower and buys no memory that matters."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
