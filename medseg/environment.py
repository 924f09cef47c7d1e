"""Facts about the software and hardware a run uses, shared by `medseg doctor` and the wandb run config."""

import os
import platform
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

import medseg

SHM = Path("/dev/shm")


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """medseg and the versions that decide how training runs: torch with its CUDA and cuDNN, MONAI, Lightning."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "medseg": medseg.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none (CPU build)",
        "cudnn": str(cudnn) if cudnn else "none",
        "monai": package_version("monai"),
        "lightning": package_version("lightning"),
        "wandb": package_version("wandb"),
    }


def cpu_count() -> int:
    """CPUs this process may use (a container or `taskset` can allow fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def gpus() -> list[dict]:
    """Name, memory and capabilities of each visible CUDA device."""
    found = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        found.append({"index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                      "capability": f"{p.major}.{p.minor}", "bf16": p.major >= 8})
    return found


def shm_bytes() -> int | None:
    """Size of /dev/shm, where DataLoader workers hand batches to the main process; None where there is none."""
    return shutil.disk_usage(SHM).total if SHM.is_dir() else None
