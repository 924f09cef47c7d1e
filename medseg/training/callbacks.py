"""Crash-safe checkpoints: last.ckpt every N steps and/or every N minutes, best.ckpt after every validation, each
file written beside its final name and renamed into place; and a validation (so a best.ckpt) when max_steps ends a
run mid-epoch.

`medseg train --checkpoint.every_n_train_steps=500 --checkpoint.train_time_interval=0:10:00` bounds the work a
SIGKILL, an OOM kill or a power cut can lose; `--ckpt_path=last` resumes from the newest last.ckpt.
"""

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medseg import compat
from medseg.utils.files import atomic_write


class Checkpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, where every_n_train_steps and train_time_interval only refresh last.ckpt.

    In Lightning they are checkpoint triggers of their own, exclusive of each other and of the per-validation save:
    with either set, best.ckpt would no longer be saved after validation, a step's weights would be paired with
    the previous validation's score, and before the first validation (no val/dice_mean yet) nothing at all would be
    saved. Here best.ckpt (the monitored top-k) is saved after a validation that improved it, last.ckpt after every
    validation (Lightning: only with best.ckpt), and last.ckpt is refreshed in between whenever an interval passed.

    Args:
        every_n_train_steps: also refresh last.ckpt every this many training steps (None or 0: off).
        train_time_interval: also refresh last.ckpt when this much time ("h:m:s") has passed since it was saved
            (at a refresh or after a validation).
    """

    def __init__(self, *args: Any, every_n_train_steps: int | None = None,
                 train_time_interval: timedelta | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_every_steps = every_n_train_steps or 0
        self.last_every_seconds = train_time_interval.total_seconds() if train_time_interval else None
        self.last_refreshed = time.monotonic()

    @property
    def state_key(self) -> str:
        """ModelCheckpoint's key: runs begun before this subclass resume with their best score, and readers of
        checkpoint["callbacks"] find it under the usual name."""
        return "ModelCheckpoint" + super().state_key.removeprefix(type(self).__qualname__)

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self.last_refreshed = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.monotonic()
        steps_due = self.last_every_steps > 0 and trainer.global_step % self.last_every_steps == 0
        time_due = False
        if self.last_every_seconds is not None:  # rank 0's clock decides, so that all ranks save together
            time_due = trainer.strategy.broadcast(now - self.last_refreshed >= self.last_every_seconds)
        if (steps_due or time_due) and not compat.should_skip_saving(self, trainer):
            self.last_refreshed = now
            saved_step = compat.last_step_saved(self)
            compat.save_last(self, trainer)
            compat.set_last_step_saved(self, saved_step)  # or a validation at this very step would save nothing

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if compat.saves_on_train_epoch_end(self, trainer):
            self.save_last_after_validation(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not compat.saves_on_train_epoch_end(self, trainer):
            self.save_last_after_validation(trainer)

    def save_last_after_validation(self, trainer) -> None:
        """Lightning refreshes last.ckpt after a validation only when best.ckpt improved, so a resume after a
        plateau would repeat every epoch since the best one."""
        if not compat.should_skip_saving(self, trainer):  # also: already saved at this step (best improved)
            compat.save_last(self, trainer)
        self.last_refreshed = time.monotonic()


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temporary folder beside the checkpoint, then a rename (medseg.utils.files.atomic_write).

    Lightning's own save goes through a temporary file in $TMPDIR that is moved into place: when /tmp is another
    file system (tmpfs, a Docker volume for the runs) that move is a copy into the final name, and a kill during
    it leaves a truncated last.ckpt in place of the previous good one. Remote URLs keep Lightning's save.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        fs, local_path = url_to_fs(str(path))  # file://… and plain paths -> the local path
        if not isinstance(fs, LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_write(Path(local_path), lambda tmp: torch.save(checkpoint, tmp))


class ValidateAtStepLimit(Callback):
    """Lightning validates at epoch ends only, so a run stopped by max_steps mid-epoch would end with no best.ckpt.
    Requesting a stop at the limit makes Lightning validate (and checkpoint) first, as it does for max_time."""

    def on_train_batch_end(self, trainer, *args) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True
