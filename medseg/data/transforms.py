"""MONAI transform chains shared by training, validation and predict, so inference preprocesses exactly as training.

Case dicts hold `image` (list of per-channel files, or one 4D file with channels last) and optionally `label`.
"""

from collections.abc import Sequence

import numpy as np
import torch
from monai import transforms as T
from monai.data import MetaTensor

from medseg.data.checks import check_label_grid
from medseg.data.io import Volume, read_volume
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

    def read_image(self, files: str | Sequence[str]) -> tuple[MetaTensor, Volume]:
        """(C, X, Y, Z) image of a case and the Volume of its first file, whose header a mask copies."""
        files = [files] if isinstance(files, str) else list(files)
        volumes = [read_volume(f, self.voxel_size) for f in files]
        channels = []  # (volume, 3D array) pairs: one 4D file (channels last, MSD style) or a file per channel
        for v in volumes:
            channels += [(v, v.array[..., c]) for c in range(v.array.shape[3])] if v.array.ndim == 4 else [(v, v.array)]
        first, shape = volumes[0], channels[0][1].shape
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
        try:
            self.convention.check(v.array, str(v.path))
        except ValueError as e:
            raise MedsegError(str(e)) from None
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


def preprocess(
    keys: Sequence[str],
    spacing: Sequence[float] | None,
    crop_foreground: bool,
    normalize_nonzero: bool,
) -> list:
    """Deterministic preprocessing, invertible where it moves voxels: canonical orientation, spacing, crop, z-score.

    With normalize_nonzero (MRI) the background is taken to be each channel's minimum and shifted to 0 first.
    """
    modes = ["bilinear", "nearest"][: len(keys)]
    steps = [T.Lambdad("image", background_to_zero)] if normalize_nonzero else []
    steps += [T.Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))]
    if spacing:
        steps.append(T.Spacingd(keys, pixdim=spacing, mode=modes))
    if crop_foreground:
        steps.append(T.CropForegroundd(keys, source_key="image", select_fn=lambda x: x != 0, margin=2,
                                       allow_smaller=True))
    steps.append(T.NormalizeIntensityd("image", nonzero=normalize_nonzero, channel_wise=True))
    return steps


def augment(patch_size: Sequence[int], samples_per_case: int) -> list:
    """Foreground-oversampled patches (half the patches centred on a labelled voxel), flips, intensity jitter."""
    keys = ["image", "label"]
    return [
        T.SpatialPadd(keys, spatial_size=patch_size),
        T.RandCropByPosNegLabeld(keys, label_key="label", spatial_size=patch_size, pos=1, neg=1,
                                 num_samples=samples_per_case, image_key="image", image_threshold=0),
        T.RandFlipd(keys, prob=0.5, spatial_axis=0),
        T.RandFlipd(keys, prob=0.5, spatial_axis=1),
        T.RandFlipd(keys, prob=0.5, spatial_axis=2),
        T.RandScaleIntensityd("image", factors=0.1, prob=0.5),
        T.RandShiftIntensityd("image", offsets=0.1, prob=0.5),
    ]
