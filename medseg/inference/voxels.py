"""Voxel-size check for EM stacks: a volume imaged at another voxel size is resampled to the model's and back.

TIFF and HDF5 stacks carry no geometry of their own; a stack without a stated voxel size is taken to have the
model's (its plan's `voxel_size`). An HDF5 dataset's `resolution` attribute ((z, y, x) nm, CREMI and PyTorch
Connectomics files) or `medseg predict --voxel-size Z Y X` states it; when it differs from the model's by more than
1 % on an axis, the image is interpolated (trilinear) to the model's voxel size, predicted there, and the
probability maps interpolated back to the input grid before decoding, so the ids have the input's shape.
"""

from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor

from medseg.data.io import HDF5, suffix

TOLERANCE = 0.01


def stored_voxel_size(path: str | Path) -> tuple[float, ...] | None:
    """An HDF5 volume's (z, y, x) `resolution` attribute, if it has one of 3 positive numbers."""
    if suffix(path) not in HDF5:
        return None
    with h5py.File(path, "r") as f:
        names: list[str] = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        value = f[names[0]].attrs.get("resolution") if len(names) == 1 else None
    value = np.asarray(value, dtype=float).ravel() if value is not None else None
    return tuple(value) if value is not None and value.size == 3 and (value > 0).all() else None


def resampling(given: Sequence[float] | None, model: Sequence[float] | None) -> tuple[float, ...] | None:
    """(x, y, z) zoom factors from a (z, y, x) input voxel size to the model's, or None when they match (or one is
    unknown)."""
    if given is None or model is None:
        return None
    ratio = np.asarray(given, dtype=float)[::-1] / np.asarray(model, dtype=float)[::-1]  # (x, y, z)
    return tuple(float(r) for r in ratio) if np.any(np.abs(ratio - 1) > TOLERANCE) else None


def zoom(image: MetaTensor, factors: Sequence[float]) -> MetaTensor:
    """(C, X, Y, Z) resampled by `factors` (trilinear); the affine's voxel size becomes the model's."""
    size = [max(2, round(n * f)) for n, f in zip(image.shape[1:], factors, strict=True)]
    out = F.interpolate(image.as_tensor()[None].float(), size=size, mode="trilinear", align_corners=False)[0]
    affine = image.affine.clone()
    affine[:3, :3] = affine[:3, :3] / torch.as_tensor(factors, dtype=affine.dtype)
    return MetaTensor(out, affine=affine, meta={k: v for k, v in image.meta.items() if k != "affine"})


def zoom_back(maps: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """(R, X', Y', Z') maps interpolated (trilinear) onto the input's (X, Y, Z) grid."""
    out = F.interpolate(torch.from_numpy(maps)[None], size=list(shape), mode="trilinear", align_corners=False)[0]
    return out.numpy().clip(0, 1)
