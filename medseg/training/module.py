"""LightningModule: region-wise DiceCE training (EM neurons: masked BCE + Dice on boundary maps), sliding-window
validation (EM neurons: decoded and scored by adapted Rand error), self-describing checkpoints."""

import json
import math

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Timer
from monai.inferers import sliding_window_inference
from monai.losses import DeepSupervisionLoss, DiceCELoss
from monai.metrics import compute_dice
from torch import nn

from medseg.blocks import BlockKind, embed_config_file
from medseg.data.plan import FORMAT, upgrade_net
from medseg.em.decode import decode
from medseg.em.loss import MaskedDiceBCE
from medseg.errors import MedsegError
from medseg.evaluation.metrics import instance_metrics
from medseg.labels import get_convention
from medseg.nets import ArchKind, build_net
from medseg.nets.layers import CHANNELS, KERNEL_SIZES, STRIDES
from medseg.runtime import compile_net, to_channels_last, use_channels_last

INSTANCE_SCORES = ["adapted_rand_error", "voi_split", "voi_merge"]  # EM neuron ids, lower is better


class SegModule(pl.LightningModule):
    """Trains `arch` with convolutions of kind `block`; one sigmoid output per region of the label convention.

    Args:
        modalities / label_convention: linked from the data section; fix input and output channels.
        channels, strides, kernel_sizes: per stage, per axis allowed (EM: in-plane (3, 3, 1) kernels, (2, 2, 1)
            strides in the first stages).
        lr, weight_decay, warmup_steps: AdamW with linear warm-up, then cosine decay over the training budget
            (max_steps, max_epochs or max_time, whichever ends first).
        sw_overlap: sliding-window overlap for validation (predict has its own --overlap).
        channels_last: net and inputs in channels_last_3d; None picks the faster layout for the device (medseg.runtime).
        compile: `torch.compile` the net in place when fitting starts (warm-up of seconds to minutes; off by default).
        deep_supervision: nnU-Net's deep supervision, in training only: 1×1×1 heads on the decoder levels below
            full resolution (the lowest dropped), DiceCE against nearest-downsampled regions, weighted 1/2^i and
            normalised. The heads live here, not in the net, so checkpoints predict like any other.
        init_weights: start from the network weights of this checkpoint or bundled model (fine-tuning, e.g. a new
            recipe from the bundled `brats` model); its network arguments must equal these.
    """

    def __init__(
        self,
        modalities: list[str],
        label_convention: str,
        arch: ArchKind = "unet",
        block: BlockKind = "conv",
        block_kwargs: dict | None = None,
        channels: list[int] = CHANNELS,
        strides: list[int | list[int]] = STRIDES,
        kernel_sizes: list[int | list[int]] = KERNEL_SIZES,
        lr: float = 3e-3,
        weight_decay: float = 1e-5,
        warmup_steps: int = 20,
        sw_overlap: float = 0.25,
        channels_last: bool | None = None,
        compile: bool = False,
        deep_supervision: bool = False,
        init_weights: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.hparams.block_kwargs = embed_config_file(block_kwargs)  # the checkpoint carries the configuration
        self.convention = get_convention(label_convention)
        self.regions = list(self.convention.regions)
        self.net = build_net(arch, len(modalities), len(self.regions), **self.net_kwargs())
        if init_weights:
            self.load_weights(init_weights)
        if self.convention.instances:  # EM neuron ids: boundary/affinity maps with ignored voxels
            self.loss = MaskedDiceBCE()
        else:
            self.loss = DiceCELoss(sigmoid=True, smooth_nr=0, smooth_dr=1e-5, squared_pred=True, batch=True)
        self.aux_heads = nn.ModuleList()
        if deep_supervision:
            widths = self.net.decoder_widths[1:-1][::-1]  # below full resolution, highest first; lowest dropped
            if not widths:
                raise MedsegError("model.deep_supervision: needs at least 4 stages (a decoder level below full "
                                  f"resolution besides the lowest, which is not supervised), got {len(channels)}")
            self.aux_heads.extend(nn.Conv3d(w, len(self.regions), 1) for w in widths)
            weights = [0.5**i for i in range(len(widths) + 1)]
            self.loss = DeepSupervisionLoss(self.loss, weights=[w / sum(weights) for w in weights])
        self.val_rows: list[torch.Tensor] = []  # per validation case: dataset index, then each of val_names
        self.val_names = INSTANCE_SCORES if self.convention.instances else [f"dice_{r}" for r in self.regions]

    def net_kwargs(self) -> dict:
        h = self.hparams
        return {"channels": h.channels, "strides": h.strides, "kernel_sizes": h.kernel_sizes, "block": h.block,
                "block_kwargs": h.block_kwargs}

    def load_weights(self, source: str) -> None:
        """The network weights of a checkpoint or bundled model, whose network must be this one."""
        from medseg.models import resolve_model
        from medseg.models.loading import load_checkpoint

        plan, state = load_checkpoint(resolve_model(source))
        mine = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.net_kwargs().items()}
        theirs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in plan.net.items()}
        if plan.arch != self.hparams.arch or mine != theirs:
            raise MedsegError(f"model.init_weights: {source} is {plan.arch} {theirs}, not {self.hparams.arch} {mine}")
        self.net.load_state_dict(state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_fit_start(self) -> None:
        """Layout and compilation once the device is known; both keep the state_dict keys."""
        if use_channels_last(self.hparams.channels_last, self.device):
            to_channels_last(self.net)
        if self.hparams.compile:
            compile_net(self.net)
    def training_outputs(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """The logits, or with deep supervision the logits of every supervised level, highest resolution first."""
        if not self.aux_heads:
            return self.net(x)
        features = self.net.decoder_features(x)[::-1]  # highest resolution first
        aux = zip(self.aux_heads, features[1 : 1 + len(self.aux_heads)], strict=True)
        return [self.net.head(features[0])] + [head(f) for head, f in aux]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self.training_outputs(batch["image"]), batch["label"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        """Dice per case and region; returns the predicted regions (for the wandb slices). EM neuron ids: the
        prediction decoded to ids (as predict does) and scored by adapted Rand error and VOI against the ids."""
        patch = self.trainer.datamodule.plan.patch_size
        logits = sliding_window_inference(batch["image"], patch, 2, self.net, overlap=self.hparams.sw_overlap,
                                          mode="gaussian")
        index = batch["index"][:, None].float()
        if self.convention.instances:
            ids = decode(logits[0].float().sigmoid().cpu().numpy(), self.convention.targets,
                         offsets=self.convention.offsets)
            scores = instance_metrics(ids, batch["label"][0, 0].cpu().numpy())
            row = torch.tensor([[scores[k] for k in INSTANCE_SCORES]]).to(index)
            self.val_rows.append(torch.cat([index, row], dim=1))
            return None
        pred = logits.sigmoid() > 0.5
        dice = compute_dice(pred, batch["label"] > 0.5, include_background=True, ignore_empty=False)  # (B, R)
        self.val_rows.append(torch.cat([index, dice.to(index)], dim=1))
        return pred

    def on_validation_epoch_end(self) -> None:
        """Mean scores over the validation cases, the same on every rank and the same as in a single process.

        Under DDP each rank holds its shard; Lightning's DistributedSampler pads the shards to equal length by
        repeating cases, so rows are gathered from all ranks and each case is counted once (by dataset index).
        """
        rows = torch.cat(self.val_rows).as_subclass(torch.Tensor)  # plain tensor: checkpoints load weights_only
        self.val_rows.clear()
        if self.trainer.world_size > 1:
            rows = self.all_gather(rows).reshape(-1, rows.shape[1])
        per_case = {int(row[0]): row[1:] for row in rows}
        scores = torch.stack(list(per_case.values())).nanmean(dim=0)  # (len(val_names),)
        # sync_dist only averages equal values here; it keeps Lightning from warning about epoch-level DDP logs
        for name, value in zip(self.val_names, scores, strict=True):
            self.log(f"val/{name}", value, sync_dist=True, prog_bar=self.convention.instances)
        if self.convention.instances:
            self.log("val/voi", scores[1] + scores[2], sync_dist=True)
        else:
            self.log("val/dice_mean", scores.mean(), prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        """Warm-up then cosine decay, driven by the fraction of the budget used (steps, epochs or wall time)."""
        step = self.trainer.global_step
        warmup = min(1.0, (step + 1) / max(1, self.hparams.warmup_steps))
        lr = self.hparams.lr * warmup * 0.5 * (1 + math.cos(math.pi * self.budget_used()))
        for group in self.optimizers().param_groups:
            group["lr"] = lr
        self.log("train/lr", lr)

    def budget_used(self) -> float:
        t = self.trainer
        used = [t.global_step / t.estimated_stepping_batches] if math.isfinite(t.estimated_stepping_batches) else []
        timer = next((c for c in t.callbacks if isinstance(c, Timer)), None)
        if timer is not None and timer.time_remaining("train") is not None:
            elapsed = timer.time_elapsed("train")
            used.append(elapsed / max(1e-9, elapsed + timer.time_remaining("train")))
        return min(1.0, max(used, default=0.0))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Resuming a run whose blocks were built under an older default needs those settings back (the weights
        would not fit): say which, before the state_dict load fails on missing keys."""
        stored = checkpoint.get("medseg", {})
        net = stored.get("net", {})
        then = upgrade_net(net, stored.get("format", FORMAT)).get("block_kwargs")
        if then != net.get("block_kwargs") and then != self.hparams.block_kwargs:
            raise MedsegError(f"this checkpoint's {net['block']} blocks were trained with block_kwargs "
                              f"{json.dumps(then)} (the defaults of checkpoint format {stored['format']}); resume "
                              f"with --model.block_kwargs='{json.dumps(then)}'")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Everything predict needs: the data module's plan completed with this network (plain JSON values)."""
        checkpoint["medseg"] = self.trainer.datamodule.plan.with_net(self.hparams.arch, self.net_kwargs()).to_dict()
