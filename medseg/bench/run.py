"""`medseg bench`: what each block costs inside each net (parameters, FLOPs, prediction and training time, memory).

Every arch in NETS × block in BLOCKS is built at a recipe's widths (configs/brats.yaml by default, or the GPU
recipe's with --widths gpu) with each block's default settings, so a newly registered block or net is measured
without touching this file. FLOPs come from torch's FlopCounterMode on one patch forward (convolutions and matmuls;
norms and activations are not counted). Prediction time is a full MONAI sliding-window prediction of one volume
(gaussian blending, sw_batch_size 2) after a warm-up forward of one window batch; training time is one step
(forward, DiceCE backward, AdamW step) on a batch of the recipe's patches (batch_size × samples_per_case) after a
warm-up step. Both are medians of --repeats rounds in one process at a fixed thread count, every net and layer run
once per round (so a load change on a shared machine hits them alike), the way `medseg predict` and `medseg train`
run them (medseg.runtime: channels_last_3d per device, --compile). A second table times one 64→64 k=3 layer per block.
"""

import copy
import json
import multiprocessing
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from torch import nn
from tqdm import tqdm

from medseg.bench.flops import count_flops
from medseg.bench.measure import MEMORY_METHOD, Timing, peak_memory, pin_large_allocations, state_mib, timed_rounds
from medseg.bench.tables import add_ratios, header, report
from medseg.blocks import BLOCKS, make_conv3d
from medseg.errors import MedsegError
from medseg.nets import NETS, build_net
from medseg.registry import look_up_all
from medseg.resources import recipe_path
from medseg.runtime import compile_net, pick_device, prepare_net, to_channels_last, use_channels_last
from medseg.utils.files import atomic_write

RECIPE = "brats"  # configs/brats.yaml, also when installed (medseg.resources)
IN_CHANNELS, OUT_CHANNELS, LAYER_CHANNELS, SW_BATCH = 2, 3, 64, 2
BRATS_GRID = (240, 240, 155)  # voxels of a BraTS scan at 1 mm
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
GPU_WIDTHS = [32, 64, 128, 256, 320]  # configs/brats.yaml's scale-up for GPU workstations


@dataclass
class Settings:
    device: torch.device
    dtype: torch.dtype
    repeats: int
    overlap: float
    channels_last: bool
    compile: bool
    block_kwargs: dict[str, dict]  # per block name: settings other than its defaults

    @property
    def autocast(self) -> torch.dtype | None:
        return None if self.dtype == torch.float32 else self.dtype

    def prepare(self, net: nn.Module, example_shape: tuple[int, ...]) -> nn.Module:
        """An eval-mode net as `medseg predict` runs it (compiled now, so the warm-up is not timed as prediction)."""
        return prepare_net(net, self.device, self.channels_last, self.compile, example_shape, self.autocast)

    def prepare_training(self, net: nn.Module) -> nn.Module:
        """A train-mode net as `medseg train` runs it (compiled lazily: the warm-up step compiles)."""
        net = net.to(self.device).train()
        if self.channels_last:
            to_channels_last(net)
        return compile_net(net)[0] if self.compile else net

    def names(self) -> tuple[str, str, str, str]:
        """Record keys of a prediction timing on this device."""
        kind = self.device.type
        return f"{kind}_ms", f"{kind}_runs_ms", "warmup_s", "peak_mib"

    @contextmanager
    def precision(self) -> Iterator[None]:
        with torch.autocast(self.device.type, self.autocast, enabled=self.autocast is not None):
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


def train_batch(path: str | Path) -> int:
    """Patches per training step of a recipe (data.batch_size cases × data.samples_per_case patches each)."""
    data = yaml.safe_load(Path(recipe_path(path)).read_text())["data"]  # load_recipe has checked the file
    try:
        return int(data.get("batch_size", 1)) * int(data.get("samples_per_case", 1))
    except (TypeError, ValueError) as e:
        raise MedsegError(f"{path}: data.batch_size and data.samples_per_case must be integers ({e})") from None


def bench_net(arch: str, block: str, net_kwargs: dict, patch: list[int], volume: torch.Tensor, batch: int,
              settings: Settings) -> tuple[dict, list[Timing]]:
    """One arch × block: its record (parameters, FLOPs of one patch) and two timings, a full-volume sliding-window
    prediction and a training step (each with its peak memory), on two copies of the net."""
    torch.manual_seed(0)
    built = build_net(arch, IN_CHANNELS, OUT_CHANNELS, block=block, block_kwargs=settings.block_kwargs.get(block),
                      **net_kwargs)
    params = sum(p.numel() for p in built.parameters())
    with torch.inference_mode():
        flops = count_flops(built.eval(), torch.randn(1, IN_CHANNELS, *patch))
    training = bench_training(copy.deepcopy(built), patch, batch, settings)
    net = settings.prepare(built, (SW_BATCH, IN_CHANNELS, *patch))
    record = {"table": "net", "arch": arch, "block": block, "params": params, "flops": flops, "train_batch": batch,
              "shape": list(volume.shape[2:]), "patch": patch, "overlap": settings.overlap, "sw_batch_size": SW_BATCH}

    def predictor(x: torch.Tensor) -> torch.Tensor:
        record["windows"] = record.get("windows", 0) + x.shape[0]
        return net(x)

    def predict() -> None:
        record["windows"] = 0
        with torch.inference_mode(), settings.precision():
            sliding_window_inference(volume, patch, SW_BATCH, predictor, overlap=settings.overlap, mode="gaussian")

    patches = torch.randn(SW_BATCH, IN_CHANNELS, *patch, device=settings.device)

    def warmup() -> None:  # every window has the patch shape: one batch primes kernels and allocator like a full run
        with torch.inference_mode(), settings.precision():
            net(patches)

    record["weights_mib"] = weights = state_mib(net)  # what prediction holds resident: the weights, nothing more
    return record, [Timing(predict, warmup, settings.names(), lambda: weights), training]


def bench_training(net: nn.Module, patch: list[int], batch: int, settings: Settings) -> Timing:
    """One training step (forward, DiceCE backward, AdamW step) on `batch` random patches with random labels."""
    net = settings.prepare_training(net)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    loss = DiceCELoss(sigmoid=True, smooth_nr=0, smooth_dr=1e-5, squared_pred=True, batch=True)  # as SegModule
    x = torch.randn(batch, IN_CHANNELS, *patch, device=settings.device)
    y = (torch.rand(batch, OUT_CHANNELS, *patch, device=settings.device) > 0.7).float()

    def step() -> None:
        with settings.precision():
            value = loss(net(x), y)
        value.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # the warm-up step allocates AdamW's state: part of the baseline the growth is measured from, so the peak adds
    # it back with the weights (`state_mib`)
    return Timing(step, step, ("train_ms", "train_runs_ms", "train_warmup_s", "train_peak_mib"),
                  lambda: state_mib(net, optimizer))


def bench_layer(block: str, size: int, settings: Settings) -> tuple[dict, list[Timing]]:
    """One 64→64 k=3 stride-1 layer of `block` on a size³ input."""
    layer = make_conv3d(block, LAYER_CHANNELS, LAYER_CHANNELS, 3, **settings.block_kwargs.get(block, {}))
    params = sum(p.numel() for p in layer.parameters())
    x = torch.randn(1, LAYER_CHANNELS, size, size, size, device=settings.device)
    with torch.inference_mode():
        flops = count_flops(layer.eval(), x)
    layer = settings.prepare(layer, tuple(x.shape))
    if settings.channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)  # converted once, not inside every timed call

    def run() -> None:
        with torch.inference_mode(), settings.precision():
            layer(x)

    record = {"table": "layer", "arch": None, "block": block, "params": params, "flops": flops,
              "shape": [size] * 3, "in_channels": LAYER_CHANNELS, "out_channels": LAYER_CHANNELS}
    return record, [Timing(run, run, settings.names(), lambda: state_mib(layer))]


def build_jobs(jobs: list[tuple[str | None, str]], net_kwargs: dict, patch: list[int], shape: tuple[int, int, int],
               batch: int, layer_size: int, settings: Settings) -> list[tuple[dict, list[Timing]]]:
    """Records and timings of (arch, block) jobs; arch None is the one-layer table."""
    torch.manual_seed(0)
    volume = torch.randn(1, IN_CHANNELS, *shape, device=settings.device)
    return [bench_net(arch, block, net_kwargs, patch, volume, batch, settings) if arch
            else bench_layer(block, layer_size, settings) for arch, block in jobs]


def cpu_peaks(jobs: list[tuple[str | None, str]], net_kwargs: dict, patch: list[int], shape: tuple[int, int, int],
              batch: int, layer_size: int, settings: Settings, threads: int) -> list[dict]:
    """Peak memory of every job's timings, one warm-up and one run each, in a fresh process (spawned by `bench`)
    that serves large allocations by mmap from the start: RSS then follows the live tensors, and a net's peak does
    not depend on what the allocator kept from the nets measured before it."""
    pin_large_allocations()
    torch.set_num_threads(threads)
    peaks = []
    for _, timings in build_jobs(jobs, net_kwargs, patch, shape, batch, layer_size, settings):
        peak = {}
        for timing in timings:
            timing.warmup()
            with peak_memory(settings.device) as memory:
                timing.run()
            peak[timing.names[3]] = timing.peak(memory["mib"])
        peaks.append(peak)
    return peaks


def bench(config: str | Path | None = None, archs: list[str] | None = None, blocks: list[str] | None = None,
          shape: tuple[int, int, int] | None = None, repeats: int = 5, device: str = "auto",
          dtype: str = "float32", channels_last: bool | None = None, compile: bool = False, widths: str = "recipe",
          overlap: float = 0.25, threads: int | None = None, layer_size: int = 64,
          json_out: str | Path | None = None, block_kwargs: dict[str, dict] | None = None) -> list[dict]:
    """Benchmark archs × blocks (default: all registered) and one layer per block; print tables, return records.

    channels_last None runs each device's default layout (medseg.runtime), as predict and train do; block_kwargs
    maps a block name to the settings it is built with instead of its defaults."""
    archs = look_up_all(archs or list(NETS), NETS, "architecture")
    blocks = look_up_all(blocks or list(BLOCKS), BLOCKS, "block")
    block_kwargs = dict(block_kwargs or {})
    look_up_all(block_kwargs, BLOCKS, "block (--block-kwargs)")
    if device not in ("auto", "cpu", "cuda"):
        raise MedsegError(f"--device must be auto, cpu or cuda, got {device!r}")
    if dtype not in DTYPES:
        raise MedsegError(f"--dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if widths not in ("recipe", "gpu"):
        raise MedsegError(f"--widths must be recipe or gpu, got {widths!r}")
    net_kwargs, patch, recipe_volume = load_recipe(config or RECIPE)
    batch = train_batch(config or RECIPE)
    if widths == "gpu":
        if len(net_kwargs["channels"]) != len(GPU_WIDTHS):
            raise MedsegError(f"--widths gpu needs a {len(GPU_WIDTHS)}-stage recipe, "
                              f"{config or RECIPE} has {len(net_kwargs['channels'])} stages")
        net_kwargs = {**net_kwargs, "channels": GPU_WIDTHS}
    shape = tuple(shape or recipe_volume)
    bad_threads = threads is not None and threads < 1
    if len(shape) != 3 or min(shape) < 1 or repeats < 1 or not 0 <= overlap < 1 or layer_size < 0 or bad_threads:
        raise MedsegError("need --shape of 3 positive sizes, --repeats ≥ 1, --overlap in [0, 1), --layer-size ≥ 0, "
                          "--threads ≥ 1")
    target = pick_device(device)
    settings = Settings(target, DTYPES[dtype], repeats, overlap, use_channels_last(channels_last, target), compile,
                        block_kwargs)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or previous_threads)  # fixed for every run, and reported
    try:
        jobs = [(a, b) for a in archs for b in blocks] + ([(None, b) for b in blocks] if layer_size else [])
        built = build_jobs(jobs, net_kwargs, patch, shape, batch, layer_size, settings)
        timings = [t for _, ts in built for t in ts]
        with tqdm(total=len(timings) * repeats, desc="bench", unit="run") as bar:
            results = iter(timed_rounds(timings, repeats, settings.device, bar.update))
        records = []
        for record, ts in built:
            for _ in ts:
                record.update(next(results))
            records.append(record)
        if settings.device.type == "cpu":
            print("peak memory: one run of each in a fresh process …", file=sys.stderr)
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                peaks = pool.submit(cpu_peaks, jobs, net_kwargs, patch, shape, batch, layer_size, settings,
                                    torch.get_num_threads()).result()
            for record, peak in zip(records, peaks, strict=True):
                record.update(peak)
        common = {"threads": torch.get_num_threads(), "device": settings.device.type, "dtype": dtype,
                  "channels_last": settings.channels_last, "compile": compile, "widths": net_kwargs["channels"],
                  "repeats": repeats, "mem_method": MEMORY_METHOD[settings.device.type]}
    finally:
        torch.set_num_threads(previous_threads)
    records = [{**r, **common, "block_kwargs": block_kwargs.get(r["block"], {})} for r in records]
    time_key = f"{settings.device.type}_ms"
    add_ratios(records, time_key)
    print(f"{header(records, shape, patch, batch, IN_CHANNELS)}\n\n{report(records, time_key)}")
    if json_out:
        text = json.dumps(records, indent=1)
        atomic_write(Path(json_out), lambda tmp: tmp.write_text(text))
    return records
