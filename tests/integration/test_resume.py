"""Crash-safe training: `medseg train` killed with SIGKILL mid-epoch resumes from its periodic last.ckpt."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from medseg.cli import main
from tests.conftest import REPO, TINY, TINY_WANDB

EVERY, MAX_STEPS = 5, 12


def logged_lr(metrics: Path) -> dict[int, float]:
    """train/lr by step from a CSVLogger file (a row cut off by the kill is ignored)."""
    text = metrics.read_text() if metrics.exists() else ""
    lines = text.splitlines(keepends=True)
    complete = [line for line in lines if line.endswith("\n")]
    return {int(r["step"]): float(r["train/lr"]) for r in csv.DictReader(complete) if r.get("train/lr")}


def saved(ckpt: Path) -> tuple[int, int, float]:
    """(global_step, AdamW's step count, |exp_avg| of the first parameter) of a checkpoint."""
    c = torch.load(ckpt, map_location="cpu", weights_only=True)
    state = c["optimizer_states"][0]["state"][0]
    return c["global_step"], int(state["step"]), float(state["exp_avg"].abs().sum())


def wait_for(condition, proc: subprocess.Popen, log: Path, timeout: float = 1200) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"training ended (rc {proc.returncode}) before the kill:\n{log.read_text()}"
        assert time.monotonic() < end, "timed out: a hung run?"  # a run that never saves ends by itself
        time.sleep(0.05)


def test_sigkill_mid_epoch_then_resume_from_last(brats_root, tmp_path):
    """Killed after the step-5 checkpoint and before any validation (no val/dice_mean exists yet), the run resumes
    at the saved step with AdamW's state and the learning-rate schedule where they were, loses fewer than 5 steps,
    and finishes at max_steps with best.ckpt and last.ckpt. The recipe's 10-minute interval is set as well."""
    run = tmp_path / "run"
    logger = tmp_path / "logger.yaml"  # one row per step, flushed at once: what the killed process had done
    logger.write_text(f"trainer:\n  logger:\n    class_path: lightning.pytorch.loggers.CSVLogger\n    init_args:\n"
                      f"      save_dir: {run}\n      name: log\n      flush_logs_every_n_steps: 1\n"
                      f"  log_every_n_steps: 1\n")
    command = [sys.executable, "-m", "medseg.cli", "train", "--config", str(REPO / "configs/brats.yaml"),
               "--config", str(logger), f"--data.root={brats_root}", *TINY_WANDB,
               f"--trainer.default_root_dir={run}", f"--trainer.max_steps={MAX_STEPS}",
               f"--data.steps_per_epoch={MAX_STEPS}", "--trainer.num_sanity_val_steps=0",
               f"--checkpoint.every_n_train_steps={EVERY}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    last, first_log = run / "checkpoints" / "last.ckpt", run / "log" / "version_0" / "metrics.csv"

    log = tmp_path / "killed.log"
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(last.exists, proc, log)
            step = saved(last)[0]
            wait_for(lambda: max(logged_lr(first_log), default=-1) > step, proc, log)  # a step past it: work to lose
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert "could not find the monitored key" not in log.read_text()

    step, adam_step, exp_avg = saved(last)
    done = max(logged_lr(first_log)) + 1  # steps started before the kill
    assert EVERY <= step < MAX_STEPS and step % EVERY == 0 and adam_step == step and exp_avg > 0
    assert 0 < done - step <= EVERY, "more than the checkpoint interval was lost"
    assert not (run / "checkpoints" / "best.ckpt").exists()  # killed before the first validation

    resumed = subprocess.run([*command, "--ckpt_path=last"], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=1200)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    before, after = logged_lr(first_log), logged_lr(run / "log" / "version_1" / "metrics.csv")
    assert min(after) == step, "the resumed run did not start at the saved step"
    assert max(after) == MAX_STEPS - 1
    for s in range(step, done):  # the schedule continues: the same learning rate at the same step
        assert after[s] == pytest.approx(before[s], rel=1e-6)
    assert saved(last)[:2] == (MAX_STEPS, MAX_STEPS)  # AdamW's step count went on from the checkpoint's
    assert torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["global_step"] == MAX_STEPS


class LastCheckpointSteps(Callback):
    """Records, as each training batch starts, the global_step that last.ckpt holds (None: not written yet)."""

    seen: list[int | None] = []

    def __init__(self, dirpath: str):
        self.path = Path(dirpath) / "last.ckpt"

    def on_train_batch_start(self, trainer, *args) -> None:
        step = torch.load(self.path, weights_only=True)["global_step"] if self.path.exists() else None
        LastCheckpointSteps.seen.append(step)


def test_time_interval_refreshes_last_between_validations(brats_root, tmp_path):
    """With a 1 ms interval last.ckpt holds the previous step at the start of every step; the step interval and
    the time interval together are accepted (Lightning's ModelCheckpoint allows only one)."""
    LastCheckpointSteps.seen = []
    rc = main(["train", "--config", str(REPO / "configs/brats.yaml"), f"--data.root={brats_root}", *TINY,
               f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=4", "--data.steps_per_epoch=4",
               "--trainer.num_sanity_val_steps=0", "--checkpoint.train_time_interval=0:00:00.001",
               "--checkpoint.every_n_train_steps=100",
               "--trainer.callbacks+=tests.integration.test_resume.LastCheckpointSteps",
               f"--trainer.callbacks.dirpath={tmp_path / 'checkpoints'}"])
    assert rc == 0
    assert LastCheckpointSteps.seen == [None, 1, 2, 3]


def test_resume_without_a_last_checkpoint_is_an_error(brats_root, tmp_path, capsys):
    """Lightning would warn and silently train from scratch."""
    rc = main(["train", "--config", str(REPO / "configs/brats.yaml"), f"--data.root={brats_root}", *TINY,
               f"--trainer.default_root_dir={tmp_path}", "--ckpt_path=last"])
    assert rc == 2
    assert f"error: {tmp_path / 'checkpoints'}: no last.ckpt to resume from" in capsys.readouterr().err


def test_resuming_a_run_from_before_a_default_changed_names_the_setting(brats_root, tmp_path, capsys):
    """A format 2 PmSCn checkpoint has norms inside its streams; resumed under today's linear default, Lightning
    would fail on missing state_dict keys without saying why."""
    common = ["train", "--config", str(REPO / "configs/brats.yaml"), f"--data.root={brats_root}", *TINY,
              f"--trainer.default_root_dir={tmp_path}", "--model.block=pmscn", "--trainer.num_sanity_val_steps=0",
              "--data.steps_per_epoch=1"]
    assert main([*common, "--trainer.max_steps=1"]) == 0
    last = tmp_path / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["medseg"]["format"] = 2
    torch.save(ckpt, last)
    capsys.readouterr()
    assert main([*common, "--trainer.max_steps=2", "--ckpt_path=last"]) == 2
    assert """resume with --model.block_kwargs='{"inner_act": true}'""" in capsys.readouterr().err
