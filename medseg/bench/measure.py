"""Wall time and peak memory of a piece of work, as `medseg bench` records them.

Time is the median of several runs after a timed warm-up (the warm-up holds kernel selection, allocator growth and,
with --compile, the compilation). Peak memory is what the work holds resident throughout (the net's weights and
buffers; in training also the optimizer's state: `Timing.resident`) plus the growth over what was allocated before
the run: on CUDA from the caching allocator's counters, on the CPU from the kernel's resident-set high-water mark,
reset before the run, measured in a fresh process whose allocations from 64 KiB up are pinned to mmap
(`pin_large_allocations`), so the number is what the work needs and repeats to the MiB.
"""

import ctypes
import re
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

RESIDENT = "the net's weights and buffers (training: and AdamW's state) plus "
MEMORY_METHOD = {
    "cuda": RESIDENT + "the growth of torch.cuda.max_memory_allocated over the allocation before the run",
    "cpu": RESIDENT + "the growth of peak RSS over RSS before the run (kernel high-water mark VmHWM, reset through "
           "/proc/self/clear_refs after malloc_trim; exact, not sampled), one run after a warm-up in a fresh "
           "process with glibc's mmap threshold pinned at 64 KiB, so a freed tensor leaves RSS at once and the "
           "peak is the memory the work needs, not what the allocator kept from other nets or its heap's "
           "fragmentation",
}
MMAP_THRESHOLD = 64 << 10


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
    """Yields a dict whose "mib" holds, on exit, the peak memory growth (MiB) while the block ran."""
    result: dict = {"mib": None}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        result["mib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        return
    base = reset_cpu_peak()
    yield result
    if base is not None:
        result["mib"] = (resident_kb("VmHWM") - base) / 1024


def pin_large_allocations() -> None:
    """Serve every allocation ≥ 64 KiB by mmap and return it to the OS on free (glibc's default threshold moves
    with the allocation history, so the same work could peak 168 or 224 MiB depending on what ran before). At a
    1 MiB threshold the heap's fragmentation by the many mid-size tensors of the low-resolution levels still showed:
    a PmSCn UNet's prediction peaked 3–7 MiB above conv's with the same tensors (118 MiB both at 64 KiB). It makes
    every large tensor cost page faults (a PmSCn training step 1.5× slower), so it is for measuring only."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD; also turns the moving one off
    except (OSError, AttributeError):
        pass  # not glibc: the plain RSS peak


def tensor_mib(tensors: Iterable[torch.Tensor]) -> float:
    """MiB of the distinct storages behind `tensors` (a tied weight counts once)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values()) / 2**20


def state_mib(net: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> float:
    """What a net holds resident while it predicts (weights, buffers) or trains (also the optimizer's state)."""
    slots = optimizer.state.values() if optimizer else []
    state = [t for slot in slots for t in slot.values() if isinstance(t, torch.Tensor)]
    return tensor_mib([*net.parameters(), *net.buffers(), *state])


def seconds(run: Callable[[], object], device: torch.device) -> float:
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


@dataclass
class Timing:
    """One piece of work to time: its run, the warm-up before the first run, the record keys it fills
    (median ms, every run's ms, warm-up seconds, peak MiB) and the MiB it holds from before the run to after it
    (`state_mib`, read after the warm-up), which its peak counts: a net with smaller weights needs less memory
    even where its activations are the same size."""

    run: Callable[[], object]
    warmup: Callable[[], object]
    names: tuple[str, str, str, str]
    resident: Callable[[], float] = lambda: 0.0

    def peak(self, growth: float | None) -> float | None:
        """The peak memory of a run whose growth was `growth` MiB (None where it could not be measured)."""
        return None if growth is None else growth + self.resident()


def timed_rounds(timings: list[Timing], repeats: int, device: torch.device,
                 progress: Callable[[], object] = lambda: None) -> list[dict]:
    """Warm every timing up, then run them round-robin `repeats` times; per timing, the median wall time (ms),
    every run (so the spread is on record), the warm-up's seconds and, on CUDA, the largest peak memory growth (MiB;
    on the CPU None here: see `bench.cpu_peaks`).

    Round-robin because the ratios between timings are what is read: on a shared machine the load drifts, and
    timing one net after another lets a busy minute land on one of them (seen: conv 1,169–1,552 ms within one run).
    `progress` is called after every run."""
    warmups = [seconds(t.warmup, device) for t in timings]
    times: list[list[float]] = [[] for _ in timings]
    peaks: list[list[float | None]] = [[] for _ in timings]
    for _ in range(repeats):
        for i, t in enumerate(timings):
            with peak_memory(device) if device.type == "cuda" else nullcontext({"mib": None}) as memory:
                times[i].append(seconds(t.run, device) * 1000)
            peaks[i].append(t.peak(memory["mib"]))
            progress()
    return [dict(zip(t.names, (statistics.median(ts), [round(x, 1) for x in ts], round(w, 2),
                                None if None in ps else max(ps)), strict=True))
            for t, ts, w, ps in zip(timings, times, warmups, peaks, strict=True)]
