"""Wall time and peak memory of a piece of work, as `medseg bench` records them.

Time is the median of several runs after a timed warm-up (the warm-up holds kernel selection, allocator growth and,
with --compile, the compilation). Peak memory is the growth over what was allocated before the run: on CUDA from
the caching allocator's counters, on the CPU from the kernel's resident-set high-water mark, reset before each run.
"""

import ctypes
import re
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

MEMORY_METHOD = {
    "cuda": "growth of torch.cuda.max_memory_allocated over the allocation before the run",
    "cpu": "growth of peak RSS over RSS before the run (kernel high-water mark VmHWM, reset through "
           "/proc/self/clear_refs after malloc_trim; exact, not sampled)",
}


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


def seconds(run: Callable[[], object], device: torch.device) -> float:
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def timed(run: Callable[[], object], warmup: Callable[[], object], repeats: int, device: torch.device,
          names: tuple[str, str, str, str]) -> dict:
    """Median wall time (ms) of `repeats` runs after a warm-up, every run (so the spread is on record), the
    warm-up's seconds and the largest peak memory growth (MiB) among the runs, under the four `names`."""
    warmup_s = seconds(warmup, device)
    times, peaks = [], []
    for _ in range(repeats):
        with peak_memory(device) as memory:
            times.append(seconds(run, device) * 1000)
        peaks.append(memory["mib"])
    values = (statistics.median(times), [round(t, 1) for t in times], round(warmup_s, 2),
              None if None in peaks else max(peaks))
    return dict(zip(names, values, strict=True))
