"""`medseg train`: LightningCLI over SegModule and SegDataModule (several --config, dotted overrides, --print_config).

The network's input and output channels follow the data section (modalities, label convention) through argument
links; `best.ckpt` (by val/dice_mean) and `last.ckpt` go to `<trainer.default_root_dir>/checkpoints/`.
"""

import logging
import netrc
import os
import warnings
from pathlib import Path

from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from medseg.data.datamodule import SegDataModule
from medseg.module import SegModule


def checkpoint_dir(root: str | None) -> str:
    return str(Path(root or os.getcwd()) / "checkpoints")


def wandb_account_configured() -> bool:
    """An API key in the environment or in ~/.netrc (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


class ValidateAtStepLimit(Callback):
    """Lightning validates at epoch ends only, so a run stopped by max_steps mid-epoch would end with no best.ckpt.
    Requesting a stop at the limit makes Lightning validate (and checkpoint) first, as it does for max_time."""

    def on_train_batch_end(self, trainer, *args) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True


class MedsegCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--ckpt_path", default=None, help="resume from a checkpoint ('last' for the newest)")
        parser.link_arguments("data.modalities", "model.modalities")
        parser.link_arguments("data.label_convention", "model.label_convention")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/dice_mean",
            "checkpoint.mode": "max",
            "checkpoint.filename": "best",
            "checkpoint.save_last": True,
            "checkpoint.enable_version_counter": False,
        })
        parser.link_arguments("trainer.default_root_dir", "checkpoint.dirpath", compute_fn=checkpoint_dir)

    def before_instantiate_classes(self) -> None:
        """wandb runs live under the run directory, offline unless the user has an account configured."""
        trainer = self.config["trainer"]
        logger = trainer.get("logger")
        if logger is None or not str(getattr(logger, "class_path", "")).endswith("WandbLogger"):
            return
        args = logger.init_args
        if args.get("save_dir") in (None, "."):
            args["save_dir"] = trainer.get("default_root_dir") or os.getcwd()
        Path(args["save_dir"]).mkdir(parents=True, exist_ok=True)
        if "WANDB_MODE" not in os.environ and not wandb_account_configured():
            args["offline"] = True


def train(argv: list[str]) -> int:
    # force: bind to the current stderr on every call (an earlier call's stream may be closed when run in-process)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    # `medseg train` hands LightningCLI its own argv; the warning about sys.argv also being set does not apply
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    cli = MedsegCLI(SegModule, SegDataModule, run=False, args=argv, seed_everything_default=42,
                    save_config_kwargs={"overwrite": True}, parser_kwargs={"prog": "medseg train"},
                    trainer_defaults={"callbacks": [ValidateAtStepLimit()]})
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.get("ckpt_path"))
    ckpt = cli.trainer.checkpoint_callback
    if cli.trainer.is_global_zero:
        best = ckpt.best_model_score
        print(f"best val/dice_mean: {best:.4f}" if best is not None else "no validation ran: no best.ckpt")
        print(f"checkpoints: {ckpt.dirpath}")
    return 0
