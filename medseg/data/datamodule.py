"""LightningDataModule: cases from a BraTS folder or a datalist, cached preprocessing, patch sampling."""

import logging
import random
from dataclasses import replace
from pathlib import Path

import lightning.pytorch as pl
import torch
from monai import transforms as T
from monai.data import DataLoader
from torch.utils.data import WeightedRandomSampler

from medseg.data.cache import CacheKind, OwnStorage, default_cache_dir, make_dataset
from medseg.data.checks import check_training_set
from medseg.data.datasets import brats_cases, read_datalist
from medseg.data.intensity import training_fingerprint
from medseg.data.plan import Plan
from medseg.data.transforms import Augmentation, Normalization, augment
from medseg.em.targets import InstanceTargetsd
from medseg.errors import MedsegError
from medseg.labels import BRATS_MODALITIES, DEFAULT_CONVENTION, ConventionName, get_convention

log = logging.getLogger(__name__)


class SegDataModule(pl.LightningDataModule):
    """Segmentation data for MRI (BraTS layout or datalist) and EM (TIFF/HDF5 in a datalist).

    Args:
        root: BraTS-layout folder `<root>/<case>/<case>_<modality>.nii.gz` (+ `<case>_seg.nii.gz`).
        datalist: MSD-style JSON with `training` (and optional `validation`) lists; used instead of `root`.
        modalities: channel names in model order (BraTS: the exact file-name suffixes).
        label_convention: brats2021 | brats2013 | brats2023 | msd | em_membrane | em_boundary | em_affinity |
            em_affinity_lr (the last three: neuron-id volumes, trained on maps made from each augmented patch,
            medseg.em.targets).
        ignore_unlabelled: EM ids only: 0 means "not annotated" (left out of the loss) rather than "boundary".
        spacing: target voxel spacing (mm, in RAS axis order) or null to keep the native grid.
        voxel_size: EM voxel size (z, y, x) in nm for TIFF/HDF5 stacks, which carry none.
        crop_foreground: crop to the non-zero box (skull-stripped MRI); off for EM.
        normalize: z-score over non-zero voxels (`nonzero`, MRI; `nonzero_clip` clips them to their 0.5/99.5
            percentiles first; `nonzero_robust` uses their median and IQR, which a tumour moves far less) or over
            all voxels (`all`, EM). Stored in the plan: predict normalises the same way.
        patch_size: training patch and sliding-window size, in voxels after resampling.
        samples_per_case: patches drawn per case per step (the batch is batch_size x samples_per_case).
        steps_per_epoch: draw this many batches per epoch (cases sampled with replacement), for datasets of one
            or a few large volumes (EM); null = one pass over the training cases.
        augmentation: `light` (flips, small intensity jitter) or `nnunet` (adds rotation and scaling, noise, blur,
            brightness, contrast, low-resolution simulation and gamma, as nnU-Net does) for scans from other sites;
            `sites` adds a bias field, per-channel brightness and inverted gamma on top.
        negatives: patches centred away from the label per patch centred on it (1: half and half); more shows
            the model more tumour-free brain.
        healthy_mirror: probability that a drawn MRI case is replaced by its healthier hemisphere mirrored over
            the other (a brain with little or no tumour, labelled accordingly).
        val_cases: cases held out for validation when the datalist has no `validation` list.
        cache: where preprocessed cases are kept: `ram` (cache_rate of them), `disk` (for data larger than RAM) or
            `none` (preprocess every case at every step).
        cache_dir: the disk cache's folder (default ~/.cache/medseg); a sub-folder per preprocessing_key.
    """

    def __init__(
        self,
        root: str | None = None,
        datalist: str | None = None,
        modalities: list[str] = BRATS_MODALITIES,
        label_convention: ConventionName = DEFAULT_CONVENTION,
        spacing: list[float] | None = None,
        voxel_size: list[float] | None = None,
        crop_foreground: bool = True,
        normalize: Normalization = "nonzero",
        patch_size: list[int] = [64, 64, 64],  # noqa: B006
        batch_size: int = 1,
        samples_per_case: int = 2,
        steps_per_epoch: int | None = None,
        augmentation: Augmentation = "light",
        negatives: float = 1.0,
        healthy_mirror: float = 0.0,
        ignore_unlabelled: bool = False,
        val_cases: int = 1,
        num_workers: int = 0,
        cache_rate: float = 1.0,
        cache: CacheKind = "ram",
        cache_dir: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.convention = get_convention(label_convention)
        self.plan = Plan.from_data(self.hparams)  # preprocessing is built from this only; completed by SegModule
        self.train_ds = self.val_ds = None
        self.split: tuple[list[dict], list[dict]] | None = None  # a cross-validation fold's cases (training.cv)

    def cases(self) -> tuple[list[dict], list[dict]]:
        """Training and validation case dicts; a fixed random hold-out when no validation list is given."""
        h = self.hparams
        if self.split is not None:
            return self.split
        if (h.root is None) == (h.datalist is None):
            raise MedsegError("give exactly one of --data.root (BraTS folder) or --data.datalist (JSON)")
        train, val = read_datalist(h.datalist) if h.datalist else (brats_cases(h.root, h.modalities), [])
        if not val:
            if len(train) < 2:
                raise MedsegError(f"{h.datalist or h.root}: need at least 2 cases to hold one out for validation")
            shuffled = random.Random(h.seed).sample(train, len(train))
            n_val = min(h.val_cases, len(train) - 1)
            train, val = shuffled[n_val:], shuffled[:n_val]
        return train, val

    def preprocessed(self) -> T.Compose:
        """The plan's deterministic chain (files to normalised, cropped tensors), ready to be cached."""
        return T.Compose([*self.plan.case_transform(True).transforms, OwnStorage(["image", "label"])])

    def disk_cache_dir(self) -> Path:
        """The disk cache's folder for this preprocessing."""
        root = Path(self.hparams.cache_dir).expanduser() if self.hparams.cache_dir else default_cache_dir()
        return root / self.plan.key()

    def setup(self, stage: str) -> None:
        if self.train_ds is not None:
            return
        h = self.hparams
        train, val = self.cases()
        check_training_set(train + val, self.convention, h.datalist or h.root)  # before any case is cached
        log.info("training on %d cases, validating on %s", len(train), [c["case"] for c in val])
        if not self.convention.instances:  # what quality control compares predictions with (medseg.data.intensity)
            self.plan = replace(self.plan, fingerprint=training_fingerprint(
                self.plan.case_transform(True), train, self.plan.regions, self.plan.modalities, h.seed))
        val = [{**case, "index": i} for i, case in enumerate(val)]  # counts each case once under DDP (SegModule)
        # one flat chain: CacheDataset caches up to the first random transform (a nested Compose counts as random)
        sampling = augment(h.patch_size, h.samples_per_case, h.normalize.startswith("nonzero"), h.augmentation,
                           h.negatives, h.healthy_mirror)
        if self.convention.instances:
            sampling.append(InstanceTargetsd(self.convention.targets, h.ignore_unlabelled, self.convention.offsets))
        train_tf = T.Compose([*self.preprocessed().transforms, *sampling])
        workers = min(h.num_workers, 4) or None
        self.train_ds = make_dataset(train, train_tf, h.cache, self.disk_cache_dir(), h.cache_rate, workers)
        self.val_ds = make_dataset(val, self.preprocessed(), h.cache, self.disk_cache_dir(), h.cache_rate, workers)

    def train_dataloader(self) -> DataLoader:
        """One pass over the cases per epoch, or `steps_per_epoch` batches drawn with replacement on every rank.

        Under DDP Lightning shards the sampler; it would replace a RandomSampler by one pass over the cases (for EM,
        one step per epoch), whereas other samplers are sharded, so the draws are made for all ranks together.
        """
        h = self.hparams
        sampler = None
        if h.steps_per_epoch:
            world = self.trainer.world_size if self.trainer else 1
            sampler = WeightedRandomSampler(torch.ones(len(self.train_ds)), h.steps_per_epoch * h.batch_size * world)
        return DataLoader(self.train_ds, batch_size=h.batch_size, shuffle=sampler is None, sampler=sampler,
                          num_workers=h.num_workers, persistent_workers=h.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_ds, batch_size=1, num_workers=min(self.hparams.num_workers, 1))
