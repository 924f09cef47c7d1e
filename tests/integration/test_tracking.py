"""wandb tracking: what an offline run records (config, model size, validation slices) and what it must not."""

import sys
import time
from pathlib import Path

import torch

from medseg.cli import main
from medseg.labels import get_convention
from medseg.training.tracking import REDACTED, overlay, redact
from tests.conftest import REPO, TINY_WANDB

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"


def test_redact_hides_secret_keys_and_the_api_key():
    config = {"model": {"lr": 0.1, "channels": [4, 8]},
              "logger": {"init_args": {"api_key": "k", "notes": f"run with {FAKE_KEY}", "tags": ["a", FAKE_KEY]}},
              "storage": {"Token": "t", "password": "p", "client_secret": "s"}}
    assert redact(config, api_key=FAKE_KEY) == {
        "model": {"lr": 0.1, "channels": [4, 8]},
        "logger": {"init_args": {"api_key": REDACTED, "notes": REDACTED, "tags": ["a", REDACTED]}},
        "storage": {"Token": REDACTED, "password": REDACTED, "client_secret": REDACTED},
    }


def test_offline_run_logs_config_size_and_slices_but_no_key_or_command_line(brats_root, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("HOME", str(tmp_path))
    run = tmp_path / "run"
    argv = ["train", "--config", str(REPO / "configs/brats.yaml"), f"--data.root={brats_root}",
            *TINY_WANDB, f"--trainer.default_root_dir={run}",
            "--trainer.max_steps=2", "--trainer.logger.init_args.notes=smoke test"]
    monkeypatch.setattr(sys, "argv", ["medseg", *argv])  # what wandb would record as the command line
    assert main(argv) == 0

    (wandb_run,) = run.glob("wandb/offline-run-*")
    wanted = (b"model_parameters", b"val/dice_mean", b"environment", b'"patch_size":[16,16,16]')
    log = written_by_wandb(next(wandb_run.glob("run-*.wandb")), wanted)
    for logged in wanted:
        assert logged in log, logged
    assert list(wandb_run.glob("files/media/images/val/slices_*.png")), "no validation slices logged"
    assert list(wandb_run.glob("files/media/images/mask/val/slices_*.mask.png")), "no mask overlays logged"

    recorded = b"".join(p.read_bytes() for p in run.rglob("*") if p.is_file())  # wandb files, config.yaml, ckpts
    assert FAKE_KEY.encode() not in recorded
    assert not [a for a in argv if a.startswith("--") and a.encode() in recorded], "the command line was recorded"


def written_by_wandb(path: Path, wanted: tuple[bytes, ...], timeout: float = 60.0) -> bytes:
    """The run file once wandb's service process has flushed what is wanted (or its content at the timeout): the
    service writes it asynchronously, and on a loaded machine it can still hold only its header when training
    returns."""
    deadline = time.monotonic() + timeout
    while not all(w in (data := path.read_bytes()) for w in wanted) and time.monotonic() < deadline:
        time.sleep(0.5)
    return data


def test_validation_slice_is_the_one_with_most_of_the_target_region():
    """EM membranes are label 0 in the written mask: the slice is chosen by region voxels, not by non-zero labels."""
    truth = torch.zeros(1, 6, 5, 4)
    truth[0, :, :, 2] = 1  # membrane everywhere on z = 2 only
    *_, caption = overlay(torch.rand(6, 5, 4), truth, truth, get_convention("em_membrane"), "em")
    assert caption == "em z=2"
