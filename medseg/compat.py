"""The private PyTorch, Lightning and wandb APIs medseg relies on, in one place.

Each is used through this module only, has a test that it exists on the installed version
(tests/unit/test_compat.py), and is bounded: pyproject.toml caps each library below its next major version, and
the test names the entry a newer minor release removed, so a break shows as one clear test failure rather than as
an AttributeError deep in a training run.

| entry                                | used by                          | bound (pyproject) |
|--------------------------------------|----------------------------------|-------------------|
| ModelCheckpoint private members      | training.callbacks.Checkpoint    | lightning < 3     |
| WandbLogger._wandb_init              | training.tracking.keep_private   | lightning < 3     |
| nn.Module._compiled_call_impl        | runtime.compile_net (undo)       | torch < 3         |
| torch.native_group_norm              | ops.norm                         | torch < 3         |
| torch.ops.aten.convolution_backward  | ops.depthwise, ops.built         | torch < 3         |

Tested with the versions CI installs (torch 2.13, lightning 2.6).
"""

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # Lightning is imported by training only: blocks and prediction need torch alone
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import WandbLogger

# --- PyTorch (torch < 3) ---------------------------------------------------------------------------------------

native_group_norm = torch.native_group_norm  # (y, mean, rstd): the statistics a custom backward needs
convolution_backward = torch.ops.aten.convolution_backward  # the conv's own gradients, for custom autograd Functions


def uncompile(net: nn.Module) -> None:
    """Undo `nn.Module.compile` (in place), which has no public inverse: it sets `_compiled_call_impl`."""
    net._compiled_call_impl = None


def is_compiled(net: nn.Module) -> bool:
    return getattr(net, "_compiled_call_impl", None) is not None


# --- Lightning (lightning < 3) ---------------------------------------------------------------------------------

# ModelCheckpoint members Checkpoint calls to refresh last.ckpt between validations (methods, then the attribute
# that records the step last saved).
CHECKPOINT_METHODS = ("_should_skip_saving_checkpoint", "_save_last_checkpoint", "_monitor_candidates",
                      "_should_save_on_train_epoch_end")
CHECKPOINT_STEP_ATTRIBUTE = "_last_global_step_saved"


def should_skip_saving(callback: "ModelCheckpoint", trainer) -> bool:
    return callback._should_skip_saving_checkpoint(trainer)


def save_last(callback: "ModelCheckpoint", trainer) -> None:
    """Write last.ckpt now, with the current monitored values."""
    callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))


def saves_on_train_epoch_end(callback: "ModelCheckpoint", trainer) -> bool:
    return callback._should_save_on_train_epoch_end(trainer)


def last_step_saved(callback: "ModelCheckpoint") -> int:
    return getattr(callback, CHECKPOINT_STEP_ATTRIBUTE)


def set_last_step_saved(callback: "ModelCheckpoint", step: int) -> None:
    setattr(callback, CHECKPOINT_STEP_ATTRIBUTE, step)


def wandb_init_kwargs(logger: "WandbLogger") -> dict:
    """The keyword arguments the logger passes to `wandb.init` when the run starts (mutable until then)."""
    return logger._wandb_init
