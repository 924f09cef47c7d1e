"""`medseg doctor`: what this machine trains with, and warnings about what would break or slow training."""

import os

import torch

from medseg.environment import cpu_count, gpus, shm_bytes, versions
from medseg.training.tracking import wandb_account_configured

SHM_MIN = 2 * 2**30  # DataLoader workers hand every batch over in /dev/shm; Docker gives containers 64 MiB


def backends() -> list[str]:
    """torch.distributed backends in this PyTorch build (DDP uses nccl on GPUs, gloo on CPUs)."""
    dist = torch.distributed
    if not dist.is_available():
        return []
    return [name for name, ok in (("gloo", dist.is_gloo_available()), ("nccl", dist.is_nccl_available())) if ok]


def wandb_status() -> str:
    if os.environ.get("WANDB_MODE"):
        return f"{os.environ['WANDB_MODE']} (WANDB_MODE)"
    if wandb_account_configured():
        return "online (API key from WANDB_API_KEY or `wandb login`)"
    return "offline: no API key, runs stay under the run directory; `wandb login`, or `wandb sync` them later"


def problems(shm: int | None, cuda_build: str | None, found_gpus: list[dict], dist_backends: list[str]) -> list[str]:
    """Warnings for a machine with this much /dev/shm, this CUDA build of PyTorch, these GPUs and DDP backends."""
    found = []
    if shm is not None and shm < SHM_MIN:
        found.append(f"/dev/shm is only {shm / 2**20:.0f} MiB: DataLoader workers (data.num_workers > 0) pass batches "
                     "through it and die with 'bus error' or 'No space left on device'; in Docker run with "
                     "--shm-size=8g (or --ipc=host), else keep --data.num_workers=0")
    if not found_gpus and cuda_build:
        found.append(f"PyTorch is built for CUDA {cuda_build} but sees no GPU: in Docker add --gpus all, otherwise "
                     "check the NVIDIA driver with nvidia-smi (and CUDA_VISIBLE_DEVICES)")
    if not found_gpus and not cuda_build:
        found.append("no GPU and a CPU-only PyTorch: training runs on the CPU (fine for the demo and tests, slow on "
                     "real data); on a GPU machine install the CUDA build of PyTorch")
    for g in found_gpus:
        if not g["bf16"]:
            found.append(f"cuda:{g['index']} ({g['name']}) has no bfloat16: use --trainer.precision=16-mixed, "
                         "not bf16-mixed")
    if len(found_gpus) > 1 and "nccl" not in dist_backends:
        found.append("several GPUs but no NCCL in this PyTorch: multi-GPU DDP would fall back to slow gloo")
    return found


def doctor() -> int:
    """Print versions, devices, shared memory and warnings; exit 0 (warnings are advice, not errors)."""
    v = versions()
    print(f"medseg {v['medseg']} (python {v['python']})")
    print(f"torch {v['torch']}, CUDA {v['cuda']}, cuDNN {v['cudnn']}, MONAI {v['monai']}, "
          f"Lightning {v['lightning']}, wandb {v['wandb']}")
    found_gpus = gpus()
    print(f"cpu: {cpu_count()} cores usable")
    for g in found_gpus:
        print(f"cuda:{g['index']}: {g['name']}, {g['memory_gib']} GiB, compute capability {g['capability']}")
    if not found_gpus:
        print("cuda: no GPU visible")
    shm = shm_bytes()
    print(f"shared memory (/dev/shm): {'none' if shm is None else f'{shm / 2**30:.1f} GiB'}")
    dist_backends = backends()
    print(f"distributed backends: {', '.join(dist_backends) or 'none'}")
    print(f"wandb: {wandb_status()}")
    found = problems(shm, torch.version.cuda, found_gpus, dist_backends)
    for line in found:
        print(f"warning: {line}")
    if not found:
        print("ok: nothing found that would break training")
    return 0
