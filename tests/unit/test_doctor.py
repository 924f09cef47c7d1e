"""`medseg doctor`: versions, devices and shared memory of this machine, and warnings that predict broken runs."""

import torch

from medseg.cli import main
from medseg.doctor import SHM_MIN, problems
from medseg.environment import cpu_count, versions

A100 = {"index": 0, "name": "NVIDIA A100", "memory_gib": 80.0, "capability": "8.0", "bf16": True}
NCCL = ["gloo", "nccl"]
V100 = {"index": 1, "name": "Tesla V100", "memory_gib": 32.0, "capability": "7.0", "bf16": False}


def test_doctor_reports_this_machine(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    v = versions()
    for name, key in (("medseg", "medseg"), ("torch", "torch"), ("CUDA", "cuda"), ("cuDNN", "cudnn"),
                      ("MONAI", "monai"), ("Lightning", "lightning")):
        assert f"{name} {v[key]}" in out
    assert v["torch"] == torch.__version__
    assert f"cpu: {cpu_count()} cores usable" in out
    assert "shared memory (/dev/shm): " in out
    assert ("cuda:0: " in out) == torch.cuda.is_available()


def test_docker_default_shm_is_a_warning():
    (warning,) = problems(64 * 2**20, "12.6", [A100], NCCL)
    assert "64 MiB" in warning and "--shm-size" in warning
    assert problems(SHM_MIN, "12.6", [A100], NCCL) == []
    assert problems(None, "12.6", [A100], NCCL) == []  # no /dev/shm (macOS): nothing to warn about


def test_gpu_problems():
    (hidden,) = problems(SHM_MIN, "12.6", [], NCCL)
    assert "--gpus all" in hidden  # CUDA build, no GPU visible: the container was started without GPUs
    (cpu_only,) = problems(SHM_MIN, None, [], NCCL)
    assert "CPU" in cpu_only
    (no_bf16,) = problems(SHM_MIN, "12.6", [A100, V100], NCCL)
    assert "cuda:1" in no_bf16 and "16-mixed" in no_bf16
    (no_nccl,) = problems(SHM_MIN, "12.6", [A100, A100 | {"index": 1}], ["gloo"])
    assert "NCCL" in no_nccl
