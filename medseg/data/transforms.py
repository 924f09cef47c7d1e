"""MONAI transform chains shared by training, validation and predict, so inference preprocesses exactly as training.

Case dicts hold `image` (list of per-channel files, or one 4D file with channels last) and optionally `label`.
"""

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from monai import transforms as T
from monai.data import MetaTensor

from medseg.data import mirror
from medseg.data.checks import check_label_grid
from medseg.data.io import Volume, read_volume
from medseg.em.augment import em_augmentation
from medseg.errors import MedsegError
from medseg.labels import Convention


class LoadCased(T.MapTransform):
    """Read a case's channel files and label with medseg's checked readers into channel-first MetaTensors."""

    def __init__(self, channels: int, convention: Convention | None = None, voxel_size: Sequence[float] | None = None):
        super().__init__(["image", "label"], allow_missing_keys=True)
        self.channels = channels
        self.convention = convention
        self.voxel_size = tuple(voxel_size) if voxel_size else None

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        d["image"], reference = self.read_image(d["image"])
        if "label" in d:
            d["label"] = self._load_label(d["label"], reference)
        return d

    def read_image(self, files: str | Sequence[str],
                   indices: Sequence[int | None] | None = None) -> tuple[MetaTensor, Volume]:
        """(C, X, Y, Z) image of a case and the Volume of its first file, whose header a mask copies.

        indices: per file, the channel to take from a 4D file (None: all its channels, or a 3D file).
        """
        files = [files] if isinstance(files, str) else list(files)
        indices = list(indices) if indices is not None else [None] * len(files)
        volumes = {f: read_volume(f, self.voxel_size) for f in dict.fromkeys(files)}  # each file read once
        channels = []  # (volume, 3D array) pairs: one 4D file (channels last, MSD style) or a file per channel
        for f, index in zip(files, indices, strict=True):
            v = volumes[f]
            if v.array.ndim == 3:
                channels.append((v, v.array))
            else:
                channels += [(v, v.array[..., c]) for c in ([index] if index is not None else range(v.array.shape[3]))]
        first, shape = volumes[files[0]], channels[0][1].shape
        if len(channels) != self.channels:
            raise MedsegError(f"{first.path}: the model needs {self.channels} channels, got {len(channels)}")
        for v, a in channels:
            if a.shape != shape:
                raise MedsegError(f"{v.path}: shape {a.shape} differs from {first.path} {shape}")
            if not np.allclose(v.affine, first.affine, atol=1e-3):
                raise MedsegError(f"{v.path}: its affine differs from {first.path}; channels must share one grid")
        image = np.stack([a for _, a in channels]).astype(np.float32)  # (C, X, Y, Z)
        meta = {"filename_or_obj": str(first.path)}
        return MetaTensor(torch.from_numpy(image), affine=torch.as_tensor(first.affine), meta=meta), first

    def _load_label(self, path, image_volume) -> MetaTensor:
        v = read_volume(path, self.voxel_size)
        check_label_grid(v.path, v.array.shape, v.affine, image_volume.path, image_volume.array.shape,
                         image_volume.affine)
        self.convention.check(v.array, str(v.path))
        label = torch.from_numpy(np.asarray(v.array, dtype=np.int32)[None])  # (1, X, Y, Z); EM ids can pass 2**15
        return MetaTensor(label, affine=torch.as_tensor(image_volume.affine), meta={"filename_or_obj": str(v.path)})


class LabelToRegionsd(T.MapTransform):
    """(1, X, Y, Z) label map -> (R, X, Y, Z) region masks of the convention (WT/TC/ET for BraTS)."""

    def __init__(self, convention: Convention):
        super().__init__(["label"])
        self.convention = convention

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        label = d["label"]
        regions = self.convention.to_regions(np.asarray(label))
        d["label"] = MetaTensor(torch.from_numpy(regions), meta=label.meta)
        return d


def background_to_zero(image: torch.Tensor) -> torch.Tensor:
    """Shift each channel so its minimum is 0: skull-stripped MRI stored z-scored has a constant negative
    background (DeepMedic's BraTS copies: -3.6), which would defeat the non-zero crop and normalisation."""
    return image - image.amin(dim=(1, 2, 3), keepdim=True)  # (C, X, Y, Z) - (C, 1, 1, 1)


class BrainChannelsd(T.MapTransform):
    """Base of the per-channel brain transforms: `brain_values` maps each channel's non-zero (brain) voxels, given
    the `quantiles` of them, and the background stays 0."""

    def __init__(self, quantiles: Sequence[float]):
        super().__init__(["image"])
        self.q = torch.tensor(quantiles)

    def brain_values(self, values: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        image = d["image"].clone()
        for c in range(image.shape[0]):
            brain = image[c] != 0
            if brain.any():
                values = image[c][brain]
                quantiles = torch.quantile(values[:: values.numel() // 2**24 + 1], self.q.to(values))  # size cap
                image[c][brain] = self.brain_values(values, quantiles)
        d["image"] = image
        return d


class ClipNonzeroPercentilesd(BrainChannelsd):
    """Clip each channel's non-zero (brain) voxels to their own [lower, upper] percentiles, background left at 0:
    the z-score that follows is then set by tissue, not by a site's bright vessels or dark outliers (nnU-Net clips
    CT to its 0.5/99.5 percentiles for the same reason)."""

    def __init__(self, lower: float = 0.5, upper: float = 99.5):
        super().__init__([lower / 100, upper / 100])

    def brain_values(self, values: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
        return values.clamp(*quantiles)


class RobustNormalizeNonzerod(BrainChannelsd):
    """Per channel, (x - median) / (IQR / 1.349) over the non-zero (brain) voxels; the background stays 0.

    Why: the mean and standard deviation of a brain depend on its tumour. Removing the tumour of a training case
    (mirroring its healthy hemisphere) shrinks the FLAIR standard deviation to 0.74-0.80 of what it was and moves
    the mean by -0.15 to -0.27 sd, so normal brain of a scan with a small tumour z-scores as bright as tumour did
    in training; median and IQR move far less (IQR 0.89-1.05, docs/robustness.md).
    """

    def __init__(self):
        super().__init__([0.25, 0.5, 0.75])

    def brain_values(self, values: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
        q1, median, q3 = quantiles
        return (values - median) / torch.clamp((q3 - q1) / 1.349, min=1e-8)


Normalization = Literal["nonzero", "nonzero_clip", "nonzero_robust", "all"]


def preprocess(
    keys: Sequence[str],
    spacing: Sequence[float] | None,
    crop_foreground: bool,
    normalize_nonzero: bool,
    clip_percentiles: bool = False,
    robust: bool = False,
) -> list:
    """Deterministic preprocessing, invertible where it moves voxels: canonical orientation, spacing, crop, z-score.

    With normalize_nonzero (MRI) the background is taken to be each channel's minimum and shifted to 0 first;
    clip_percentiles (`nonzero_clip`) clips the brain to its 0.5/99.5 percentiles before the z-score; robust
    (`nonzero_robust`) normalises the brain by its median and IQR instead (RobustNormalizeNonzerod).
    """
    modes = ["bilinear", "nearest"][: len(keys)]
    steps = [T.Lambdad("image", background_to_zero)] if normalize_nonzero else []
    steps += [T.Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))]
    if spacing:
        steps.append(T.Spacingd(keys, pixdim=spacing, mode=modes))
    if crop_foreground:
        steps.append(T.CropForegroundd(keys, source_key="image", select_fn=lambda x: x != 0, margin=2,
                                       allow_smaller=True))
    if clip_percentiles:
        steps.append(ClipNonzeroPercentilesd())
    if robust:
        return [*steps, RobustNormalizeNonzerod()]
    steps.append(T.NormalizeIntensityd("image", nonzero=normalize_nonzero, channel_wise=True))
    return steps


class ForegroundMaskd(T.MapTransform):
    """Adds `foreground`: (1, X, Y, Z) mask of voxels that are non-zero in any channel (the brain after the
    non-zero z-score, which keeps background at exactly 0), so that negative patch centres can be anywhere in the
    brain, dark tissue (CSF, z < 0) included, but never in the empty background."""

    def __init__(self):
        super().__init__(["image"])

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        d["foreground"] = (d["image"] != 0).any(dim=0, keepdim=True)  # (C, X, Y, Z) -> (1, X, Y, Z)
        return d


def restandardize(image: np.ndarray) -> np.ndarray:
    """Z-score each channel of a normalised (C, X, Y, Z) brain again over its own non-zero voxels: a brain that
    lost its tumour has a smaller FLAIR sd (docs/robustness.md), and predict z-scores a real small-tumour brain
    with its own statistics, so a training mirror must be seen the same way."""
    brain = (image != 0).any(axis=0)
    out = image.astype(np.float32, copy=True)
    for channel in out:  # (X, Y, Z) views
        values = channel[brain]
        channel[brain] = (values - values.mean()) / max(float(values.std()), 1e-6)
    return out


class RandHealthyMirrord(T.RandomizableTransform, T.MapTransform):
    """With probability `prob`, mirror the hemisphere with less tumour over the other one (first axis: left-right
    after the RAS reorientation), image and region masks together: a brain with little or no tumour, so that
    the model also sees whole tumour-free brains and stops expecting a tumour in every scan; the image is
    z-scored again over the mirrored brain, as predict would normalise it. The training cases'
    mirrors keep 0-57 mL of tumour (docs/robustness.md), labelled as mirrored."""

    def __init__(self, prob: float):
        T.MapTransform.__init__(self, ["image", "label"])
        T.RandomizableTransform.__init__(self, prob)

    def __call__(self, data: dict) -> dict:
        self.randomize(None)
        if not self._do_transform:
            return data
        d = dict(data)
        image, label = d["image"], d["label"]
        brain = np.asarray((image != 0).any(dim=0))
        if not brain.any():
            return d
        both = np.concatenate([np.asarray(image), np.asarray(label)])
        mirrored, _, _ = mirror.healthy_mirror(both, np.asarray(label[0]) > 0, brain)
        channels = restandardize(mirrored[: image.shape[0]])
        d["image"], d["label"] = image.clone(), label.clone()
        d["image"][:] = torch.from_numpy(np.ascontiguousarray(channels))
        d["label"][:] = torch.from_numpy(np.ascontiguousarray(mirrored[image.shape[0]:]))
        return d


Augmentation = Literal["light", "nnunet", "sites", "em"]


def augment(patch_size: Sequence[int], samples_per_case: int, nonzero_foreground: bool,
            augmentation: Augmentation = "light", negatives: float = 1.0, healthy_mirror: float = 0.0) -> list:
    """Patch sampling (1 patch centred on a labelled voxel per `negatives` centred elsewhere), then flips and
    intensity changes.

    Negative centres come from the foreground: the non-zero brain for MRI (`nonzero_foreground`), the whole
    volume otherwise (EM); more of them (`negatives` > 1) shows the model more tumour-free brain. `nnunet` adds
    nnU-Net's spatial and intensity augmentation (rotation and scaling, Gaussian noise and blur, brightness,
    contrast, low-resolution simulation, gamma) with its probabilities, for models that must work on scans from
    other sites; `sites` adds to it what differs between MRI sites and nnU-Net leaves out: a smooth bias field,
    per-channel brightness and gamma on the inverted image (offsets and global scale the z-score removes);
    `light` keeps flips and a small intensity jitter. `healthy_mirror`: probability of a tumour-free brain made by
    RandHealthyMirrord first.
    `em` is PyTorch Connectomics' EM set (medseg.em.augment: section artefacts, elastic, rescaling, the 48 flips
    and transposes of a cubic patch).
    """
    keys = ["image", "label"]
    crop = T.RandCropByPosNegLabeld(keys, label_key="label", spatial_size=patch_size, pos=1, neg=negatives,
                                    num_samples=samples_per_case, image_threshold=0,
                                    image_key="foreground" if nonzero_foreground else None)
    if nonzero_foreground:
        sampling = [T.SpatialPadd(keys, spatial_size=patch_size), ForegroundMaskd(), crop,
                    T.DeleteItemsd("foreground")]
        sampling = ([RandHealthyMirrord(healthy_mirror)] if healthy_mirror else []) + sampling
    else:
        sampling = [T.SpatialPadd(keys, spatial_size=patch_size), crop]
    if augmentation == "em":
        return sampling + em_augmentation(isotropic=len(set(patch_size)) == 1)
    flips = [T.RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(3)]
    if augmentation == "light":
        return sampling + flips + [
            T.RandScaleIntensityd("image", factors=0.1, prob=0.5),
            T.RandShiftIntensityd("image", offsets=0.1, prob=0.5),
        ]
    sites = [
        T.RandBiasFieldd("image", prob=0.3, coeff_range=(0.0, 0.2), degree=3),  # multiplies: background stays 0
        T.RandScaleIntensityd("image", factors=0.2, prob=0.2, channel_wise=True),  # one channel brighter
        T.RandAdjustContrastd("image", prob=0.15, gamma=(0.7, 1.5), invert_image=True, retain_stats=True),
    ] if augmentation == "sites" else []
    return sampling + [
        T.RandAffined(keys, prob=0.2, rotate_range=[math.pi / 6] * 3, scale_range=[(-0.3, 0.4)] * 3,
                      mode=["bilinear", "nearest"], padding_mode="zeros", spatial_size=patch_size),
        T.RandGaussianNoised("image", prob=0.1, std=0.1),
        T.RandGaussianSmoothd("image", prob=0.2, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)),
        T.RandScaleIntensityd("image", factors=0.25, prob=0.15),  # brightness: x (0.75, 1.25)
        T.RandScaleIntensityFixedMeand("image", factors=0.25, prob=0.15),  # contrast around the mean
        T.RandSimulateLowResolutiond("image", prob=0.25, zoom_range=(0.5, 1.0)),
        T.RandAdjustContrastd("image", prob=0.3, gamma=(0.7, 1.5)),  # gamma, on the patch's min-max range
        *sites,
        *flips,
    ]
