"""wandb tracking for `medseg train`: offline unless an account is set up, nothing private recorded.

Besides Lightning's metrics and hyperparameters, a run gets the resolved config (secrets redacted), the model size,
the software and GPUs it ran on, and a few validation slices with the predicted and true masks overlaid.
"""

import netrc
import os
import re
from pathlib import Path

import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from medseg import compat
from medseg.environment import gpus, versions
from medseg.labels import Convention

# wandb records the command line, the git remote and the code by default; a token on the command line or in a
# remote URL would be uploaded with them. Versions and GPUs are logged in the config instead (environment).
PRIVATE_SETTINGS = {"x_disable_meta": True, "disable_git": True, "disable_code": True, "save_code": False}
SECRET_KEY = re.compile(r"api_?key|token|secret|passw|credential", re.IGNORECASE)
REDACTED = "<redacted>"


def wandb_account_configured() -> bool:
    """An API key in the environment or in ~/.netrc (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def configure_wandb_logger(trainer: dict) -> None:
    """Before instantiation: the run lives under the run directory, offline unless an account is set up."""
    logger = trainer.get("logger")
    if logger is None or not str(getattr(logger, "class_path", "")).endswith("WandbLogger"):
        return
    args = logger.init_args
    if args.get("save_dir") in (None, "."):
        args["save_dir"] = trainer.get("default_root_dir") or os.getcwd()
    Path(args["save_dir"]).mkdir(parents=True, exist_ok=True)
    if "WANDB_MODE" not in os.environ and not wandb_account_configured():
        args["offline"] = True


def keep_private(logger: WandbLogger) -> None:
    """Turn off wandb's recording of the command line, git state and code, before the run starts.

    Lightning passes these keyword arguments (`compat.wandb_init_kwargs`) to wandb.init; settings are set here
    rather than in the config so that config.yaml stays readable (jsonargparse would expand them into every wandb
    setting).
    """
    init = compat.wandb_init_kwargs(logger)
    settings = init.get("settings")
    if settings is None or isinstance(settings, dict):
        init["settings"] = {**(settings or {}), **PRIVATE_SETTINGS}
    else:
        for key, value in PRIVATE_SETTINGS.items():
            setattr(settings, key, value)


def redact(value: object, api_key: str | None = None) -> object:
    """A copy of a config in which secret-looking keys, and any string holding the wandb API key, are replaced."""
    api_key = api_key if api_key is not None else os.environ.get("WANDB_API_KEY", "")
    if isinstance(value, dict):
        return {k: REDACTED if SECRET_KEY.search(str(k)) else redact(v, api_key) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, api_key) for v in value]
    if isinstance(value, str) and api_key and api_key in value:
        return REDACTED
    return value


class SaveConfigAndLog(SaveConfigCallback):
    """Writes config.yaml as Lightning does and, on rank 0 with a WandbLogger, logs the resolved config, the model
    size and the environment to the run."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        if not isinstance(trainer.logger, WandbLogger):
            return
        config = redact(yaml.safe_load(self.parser.dump(self.config, skip_none=False)))
        params = list(pl_module.parameters())
        trainer.logger.log_hyperparams({
            "config": config,
            "model_parameters": sum(p.numel() for p in params),
            "model_megabytes": round(sum(p.numel() * p.element_size() for p in params) / 2**20, 3),
            "environment": {**versions(), "gpus": [g["name"] for g in gpus()], "world_size": trainer.world_size},
        })


class ValidationSlices(Callback):
    """On rank 0 with a WandbLogger: per validation round, the axial slice with the most tumour (EM: membrane) of
    the first `cases` cases, with the predicted and true masks overlaid (validation_step returns the predicted
    regions; EM neuron models return none and log no slices)."""

    def __init__(self, cases: int = 3):
        self.cases = cases
        self.slices: list[tuple[np.ndarray, dict, str]] = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch: dict, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if (trainer.sanity_checking or not trainer.is_global_zero or batch_idx >= self.cases
                or not isinstance(trainer.logger, WandbLogger) or not isinstance(outputs, torch.Tensor)):
            return
        self.slices.append(overlay(batch["image"][0, 0], outputs[0], batch["label"][0], pl_module.convention,
                                   str(batch["case"][0])))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self.slices:
            images, masks, captions = (list(x) for x in zip(*self.slices, strict=True))
            trainer.logger.log_image("val/slices", images, step=trainer.global_step, masks=masks, caption=captions)
            self.slices.clear()


def overlay(image: torch.Tensor, pred: torch.Tensor, truth: torch.Tensor, convention: Convention,
            case: str) -> tuple[np.ndarray, dict, str]:
    """(X, Y, Z) image and (R, X, Y, Z) region masks -> a uint8 slice, wandb mask overlays and a caption."""
    pred_labels = convention.from_regions(pred.cpu().numpy())
    true_labels = convention.from_regions(truth.cpu().numpy())
    z = int((truth.cpu().numpy() > 0).any(0).sum((0, 1)).argmax())  # most voxels in a true region (EM: membrane)
    picture = image[..., z].float().cpu().numpy()
    picture = (picture - picture.min()) / max(float(np.ptp(picture)), 1e-6) * 255
    names = {value: region for region, value in convention.paint}

    def rot(a: np.ndarray) -> np.ndarray:  # RAS (X, Y) -> rows anterior to posterior, columns along X
        return np.ascontiguousarray(np.rot90(a))

    masks = {"prediction": {"mask_data": rot(pred_labels[..., z]), "class_labels": names},
             "ground_truth": {"mask_data": rot(true_labels[..., z]), "class_labels": names}}
    return rot(picture.astype(np.uint8)), masks, f"{case} z={z}"
