"""`medseg train`: LightningCLI over SegModule and SegDataModule (several --config, dotted overrides, --print_config).

The network's input and output channels follow the data section (modalities, label convention) through argument
links; `best.ckpt` (by val/dice_mean) and `last.ckpt` go to `<trainer.default_root_dir>/checkpoints/`, last.ckpt also
every --checkpoint.every_n_train_steps / --checkpoint.train_time_interval (medseg.training.callbacks).
Several GPUs or nodes: Lightning's DDP (`--trainer.strategy=ddp --trainer.devices=N --trainer.num_nodes=M`), which
re-runs this command for the other ranks; wandb is set up in medseg.training.tracking.
"""

import logging
import os
import warnings
from pathlib import Path

from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medseg.data.datamodule import SegDataModule
from medseg.errors import MedsegError
from medseg.labels import get_convention
from medseg.resources import with_recipe_paths
from medseg.training.callbacks import AtomicCheckpointIO, Checkpoint, ValidateAtStepLimit
from medseg.training.module import SegModule
from medseg.training.tracking import SaveConfigAndLog, ValidationSlices, configure_wandb_logger, keep_private


def checkpoint_dir(root: str | None) -> str:
    return str(Path(root or os.getcwd()) / "checkpoints")


class MedsegCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--ckpt_path", default=None, help="resume from a checkpoint ('last' for the newest)")
        parser.link_arguments("data.modalities", "model.modalities")
        parser.link_arguments("data.label_convention", "model.label_convention")
        parser.add_lightning_class_args(Checkpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/dice_mean",
            "checkpoint.mode": "max",
            "checkpoint.filename": "best",
            "checkpoint.save_last": True,
            "checkpoint.enable_version_counter": False,
        })
        parser.link_arguments("trainer.default_root_dir", "checkpoint.dirpath", compute_fn=checkpoint_dir)

    def before_instantiate_classes(self) -> None:
        configure_wandb_logger(self.config["trainer"])
        checkpoint = self.config.get("checkpoint")
        if (checkpoint and checkpoint["monitor"] == "val/dice_mean"
                and get_convention(self.config["data"]["label_convention"]).instances):
            checkpoint["monitor"], checkpoint["mode"] = "val/adapted_rand_error", "min"  # EM ids: no Dice to rank by

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        if type(self.trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not one the user configured
            self.trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if isinstance(self.trainer.logger, WandbLogger):
            keep_private(self.trainer.logger)


def build_cli(cli_class: type[MedsegCLI], model_class: type, argv: list[str], prog: str, **kwargs) -> MedsegCLI:
    """The LightningCLI of `medseg train` and `medseg search`: recipes, dotted overrides, seeds, saved config."""
    # force: bind to the current stderr on every call (an earlier call's stream may be closed when run in-process)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    # medseg hands LightningCLI its own argv; the warning about sys.argv also being set does not apply
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    return cli_class(model_class, SegDataModule, run=False, args=with_recipe_paths(argv), seed_everything_default=42,
                     save_config_callback=SaveConfigAndLog, save_config_kwargs={"overwrite": True},
                     parser_kwargs={"prog": prog}, **kwargs)


def train(argv: list[str]) -> int:
    cli = build_cli(MedsegCLI, SegModule, argv, "medseg train",
                    trainer_defaults={"callbacks": [ValidateAtStepLimit(), ValidationSlices()]})
    ckpt = cli.trainer.checkpoint_callback
    resume = cli.config.get("ckpt_path")
    if resume == "last" and not list(Path(ckpt.dirpath).glob("last*.ckpt")):  # Lightning would start from scratch
        raise MedsegError(f"{ckpt.dirpath}: no last.ckpt to resume from (--ckpt_path=last)")
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=resume)
    if cli.trainer.is_global_zero:
        if isinstance(cli.trainer.logger, WandbLogger):
            cli.trainer.logger.experiment.finish()  # complete the run's files now, also when called in-process
        best = ckpt.best_model_score
        print(f"best {ckpt.monitor}: {best:.4f}" if best is not None else "no validation ran: no best.ckpt")
        print(f"checkpoints: {ckpt.dirpath}")
    return 0
