"""`medseg bench`: what each block costs inside each net (parameters, FLOPs, sliding-window time, peak memory).

Every arch in NETS × block in BLOCKS is built at a recipe's widths (configs/brats.yaml by default) with each block's
default settings, so a newly registered block or net is measured without touching this file. FLOPs come from torch's
FlopCounterMode on one patch forward (convolutions and matmuls; norms and activations are not counted). Time is a
full MONAI sliding-window prediction of one volume (gaussian blending, sw_batch_size 2), the median of --repeats runs
after a warm-up forward of one window batch, all in one process at a fixed thread count. A second table times one
64→64 k=3 layer per block.
"""

import ctypes
import json
import re
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from monai.inferers import sliding_window_inference
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from medseg.blocks import BLOCKS, make_conv3d
from medseg.errors import MedsegError
from medseg.inference.predictor import pick_device
from medseg.nets import NETS, build_net
from medseg.resources import recipe_path

RECIPE = "brats"  # configs/brats.yaml, also when installed (medseg.resources)
IN_CHANNELS, OUT_CHANNELS, LAYER_CHANNELS, SW_BATCH = 2, 3, 64, 2
BRATS_GRID = (240, 240, 155)  # voxels of a BraTS scan at 1 mm
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
MEMORY_METHOD = {
    "cuda": "growth of torch.cuda.max_memory_allocated over the allocation before the run",
    "cpu": "growth of peak RSS over RSS before the run (kernel high-water mark VmHWM, reset through "
           "/proc/self/clear_refs after malloc_trim; exact, not sampled)",
}


@dataclass
class Settings:
    device: torch.device
    dtype: torch.dtype
    repeats: int
    overlap: float
    channels_last: bool

    def prepare(self, x: nn.Module | torch.Tensor) -> nn.Module | torch.Tensor:
        """Move a module or tensor to the device, in channels_last_3d when asked."""
        x = x.to(self.device)
        return x.to(memory_format=torch.channels_last_3d) if self.channels_last else x

    @contextmanager
    def inference(self) -> Iterator[None]:
        with torch.inference_mode(), torch.autocast(self.device.type, self.dtype, self.dtype != torch.float32):
            yield


def load_recipe(path: str | Path) -> tuple[dict, list[int], tuple[int, int, int]]:
    """(net widths/strides/kernels, patch size, default volume) of a training recipe (a path or a shipped name).

    The default volume is a BraTS scan (240×240×155 at 1 mm) resampled to the recipe's data.spacing: the grid that
    `medseg predict` slides over with this recipe (before foreground cropping). At brats.yaml's 2 mm that is
    120×120×78, 18 windows of 64³ instead of 75 for the raw grid, which keeps the default run of all nets × blocks
    at a few minutes on 2 CPU cores.
    """
    path = recipe_path(path)
    try:
        config = yaml.safe_load(Path(path).read_text())
        net = {key: config["model"][key] for key in ("channels", "strides", "kernel_sizes")}
        spacing = config["data"].get("spacing") or (1.0, 1.0, 1.0)
        volume = tuple(round(n / s) for n, s in zip(BRATS_GRID, spacing, strict=True))
        return net, list(config["data"]["patch_size"]), volume
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        raise MedsegError(f"{path}: not a recipe with model.channels/strides/kernel_sizes and data.patch_size "
                          f"({type(e).__name__}: {e})") from None


def check_names(kind: str, names: list[str], registry: dict) -> list[str]:
    for name in names:
        if name not in registry:
            raise MedsegError(f"unknown {kind} {name!r}; choose one of {sorted(registry)}")
    return names


def resident_kb(key: str) -> int:
    """VmRSS / VmHWM of this process from /proc/self/status, in kB."""
    return int(re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def reset_cpu_peak() -> int | None:
    """Return freed heap pages to the OS and reset the RSS high-water mark; the RSS now, or None off Linux."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed-but-cached pages would otherwise hide reuse as no growth
        Path("/proc/self/clear_refs").write_text("5")
        return resident_kb("VmRSS")
    except OSError:
        return None


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict]:
    """Yields a dict whose "mb" holds, on exit, the peak memory growth (MiB) while the block ran."""
    result: dict = {"mb": None}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        result["mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        return
    base = reset_cpu_peak()
    yield result
    if base is not None:
        result["mb"] = (resident_kb("VmHWM") - base) / 1024


def timed(run: Callable[[], object], warmup: Callable[[], object], settings: Settings) -> dict:
    """`cpu_ms` / `cuda_ms`: median wall time of settings.repeats runs after a warm-up, every run (so the spread is
    on record) and the largest peak memory growth among them."""
    warmup()
    times, peaks = [], []
    for _ in range(settings.repeats):
        with peak_memory(settings.device) as memory:
            start = time.perf_counter()
            run()
            if settings.device.type == "cuda":
                torch.cuda.synchronize(settings.device)
            times.append((time.perf_counter() - start) * 1000)
        peaks.append(memory["mb"])
    device = settings.device.type
    return {f"{device}_ms": statistics.median(times), f"{device}_runs_ms": [round(t, 1) for t in times],
            "peak_mem_mb": None if None in peaks else max(peaks)}


def count_flops(module: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops()


def bench_net(arch: str, block: str, net_kwargs: dict, patch: list[int], volume: torch.Tensor,
              settings: Settings) -> dict:
    """One arch × block: parameters, FLOPs of one patch, and a timed full-volume sliding-window prediction."""
    net = settings.prepare(build_net(arch, IN_CHANNELS, OUT_CHANNELS, block=block, **net_kwargs).eval())
    windows = []

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        windows.append(batch.shape[0])
        return net(settings.prepare(batch))  # MONAI stacks windows contiguously; keep the measured memory format

    def predict() -> torch.Tensor:
        windows.clear()
        return sliding_window_inference(volume, patch, SW_BATCH, predictor, overlap=settings.overlap, mode="gaussian")

    patches = settings.prepare(torch.randn(SW_BATCH, IN_CHANNELS, *patch))
    with settings.inference():
        flops = count_flops(net, patches[:1])
        # every window has the patch shape, so one batch of them primes kernels and allocator like a full run would
        timing = timed(predict, lambda: net(patches), settings)
    return {"table": "net", "arch": arch, "block": block, "params": sum(p.numel() for p in net.parameters()),
            "flops": flops, **timing, "windows": sum(windows),
            "shape": list(volume.shape[2:]), "patch": patch, "overlap": settings.overlap, "sw_batch_size": SW_BATCH}


def bench_layer(block: str, size: int, settings: Settings) -> dict:
    """One 64→64 k=3 stride-1 layer of `block` on a size³ input."""
    layer = settings.prepare(make_conv3d(block, LAYER_CHANNELS, LAYER_CHANNELS, 3).eval())
    x = settings.prepare(torch.randn(1, LAYER_CHANNELS, size, size, size))
    with settings.inference():
        flops = count_flops(layer, x)
        timing = timed(lambda: layer(x), lambda: layer(x), settings)
    return {"table": "layer", "arch": None, "block": block, "params": sum(p.numel() for p in layer.parameters()),
            "flops": flops, **timing, "shape": [size] * 3,
            "in_channels": LAYER_CHANNELS, "out_channels": LAYER_CHANNELS}


def add_ratios(records: list[dict], time_key: str) -> None:
    """params_x, flops_x, time_x against the conv row of the same table and arch (None without one)."""
    for r in records:
        ref = next((c for c in records if c["block"] == "conv" and (c["table"], c["arch"]) == (r["table"], r["arch"])),
                   None)
        for key, out in (("params", "params_x"), ("flops", "flops_x"), (time_key, "time_x")):
            r[out] = r[key] / ref[key] if ref else None


def render(records: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Plain-text table; columns are (header, record key, format spec), numbers right-aligned."""
    cells = [[h for h, _, _ in columns]]
    cells += [["–" if r[k] is None else format(r[k], f) for _, k, f in columns] for r in records]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    text = [not spec for _, _, spec in columns]  # text columns left-aligned
    lines = ["  ".join(c.ljust(w) if left else c.rjust(w) for c, w, left in zip(row, widths, text, strict=True))
             for row in cells]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def report(records: list[dict], time_key: str) -> str:
    unit = time_key.removesuffix("_ms")
    cost = [("params", "params", ","), ("×", "params_x", ".2f"), ("GFLOP", "gflop", ".2f"), ("×", "flops_x", ".2f"),
            (f"{unit} ms", time_key, ".0f"), ("×", "time_x", ".2f"), ("peak MiB", "peak_mem_mb", ".0f")]
    rows = [{**r, "gflop": r["flops"] / 1e9} for r in records]
    nets = [r for r in rows if r["table"] == "net"]
    layers = [r for r in rows if r["table"] == "layer"]
    parts = []
    if nets:
        parts.append(render(nets, [("arch", "arch", ""), ("block", "block", ""), *cost]))
    if layers:
        size = "×".join(map(str, layers[0]["shape"]))
        parts.append(f"one {LAYER_CHANNELS}→{LAYER_CHANNELS} k=3 layer at {size}:\n"
                     + render(layers, [("block", "block", ""), *cost]))
    return "\n\n".join(parts)


def header(first: dict, shape: tuple[int, int, int], patch: list[int]) -> str:
    """What was measured and how, so a pasted table carries its conditions."""
    size, patch_size = "×".join(map(str, shape)), "×".join(map(str, patch))
    layout = ", channels_last_3d" if first["channels_last"] else ""
    return (f"{first['device']}, {first['threads']} threads, {first['dtype']}{layout}; prediction of a "
            f"{IN_CHANNELS}×{size} volume: {first.get('windows', 0)} windows of {patch_size}, overlap "
            f"{first.get('overlap')}, sw_batch_size {SW_BATCH}, median of {first['repeats']} runs after a warm-up\n"
            f"FLOPs: one {patch_size} patch forward; × = ratio to conv in the same arch\n"
            f"peak memory: {first['mem_method']}")


def bench(config: str | Path | None = None, archs: list[str] | None = None, blocks: list[str] | None = None,
          shape: tuple[int, int, int] | None = None, repeats: int = 3, device: str = "auto",
          dtype: str = "float32", channels_last: bool = False, overlap: float = 0.25, threads: int | None = None,
          layer_size: int = 64, json_out: str | Path | None = None) -> list[dict]:
    """Benchmark archs × blocks (default: all registered) and one layer per block; print tables, return records."""
    archs = check_names("architecture", archs or list(NETS), NETS)
    blocks = check_names("block", blocks or list(BLOCKS), BLOCKS)
    if device not in ("auto", "cpu", "cuda"):
        raise MedsegError(f"--device must be auto, cpu or cuda, got {device!r}")
    if dtype not in DTYPES:
        raise MedsegError(f"--dtype must be one of {list(DTYPES)}, got {dtype!r}")
    net_kwargs, patch, recipe_volume = load_recipe(config or RECIPE)
    shape = tuple(shape or recipe_volume)
    bad_threads = threads is not None and threads < 1
    if len(shape) != 3 or min(shape) < 1 or repeats < 1 or not 0 <= overlap < 1 or layer_size < 0 or bad_threads:
        raise MedsegError("need --shape of 3 positive sizes, --repeats ≥ 1, --overlap in [0, 1), --layer-size ≥ 0, "
                          "--threads ≥ 1")
    settings = Settings(pick_device(device), DTYPES[dtype], repeats, overlap, channels_last)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or previous_threads)  # fixed for every run, and reported
    try:
        torch.manual_seed(0)
        volume = settings.prepare(torch.randn(1, IN_CHANNELS, *shape))
        jobs = [(a, b) for a in archs for b in blocks] + ([(None, b) for b in blocks] if layer_size else [])
        records = []
        for arch, block in tqdm(jobs, desc="bench", unit="run"):
            records.append(bench_net(arch, block, net_kwargs, patch, volume, settings) if arch
                           else bench_layer(block, layer_size, settings))
        common = {"threads": torch.get_num_threads(), "device": settings.device.type, "dtype": dtype,
                  "channels_last": channels_last, "repeats": repeats, "mem_method": MEMORY_METHOD[settings.device.type]}
    finally:
        torch.set_num_threads(previous_threads)
    records = [{**r, **common} for r in records]
    time_key = f"{settings.device.type}_ms"
    add_ratios(records, time_key)
    print(f"{header(records[0], shape, patch)}\n\n{report(records, time_key)}")
    if json_out:
        Path(json_out).write_text(json.dumps(records, indent=1))
    return records
