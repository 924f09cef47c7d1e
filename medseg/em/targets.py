"""Training targets from neuron-id volumes (0 = boundary or unlabelled, positive = one id per neuron).

Targets are made from each augmented patch (the last step of the training chain), because an affinity belongs to a
pair of voxels along one axis: made before a flip, it would sit on the wrong voxel of the pair. A value of -1
marks a voxel the loss ignores (unlabelled voxels when `ignore_unlabelled`, and affinities that leave the patch).
"""

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from monai import transforms as T
from monai.data import MetaTensor

TargetKind = Literal["boundary", "affinity"]
IGNORE = -1.0


def shifted(axis: int, shift: int) -> tuple[slice, ...]:
    """Index of the voxels whose neighbour `shift` along `axis` exists, for (X, Y, Z) arrays."""
    index = [slice(None)] * 3
    index[axis] = slice(shift, None) if shift > 0 else slice(None, shift)
    return tuple(index)


def boundaries(ids: np.ndarray) -> np.ndarray:
    """(X, Y, Z) bool: label-0 voxels, and voxels with a 6-neighbour of another (non-zero) id (both sides)."""
    boundary = ids == 0
    for axis in range(3):
        a, b = ids[shifted(axis, -1)], ids[shifted(axis, 1)]  # each voxel and its successor along the axis
        touching = (a != b) & (a != 0) & (b != 0)
        boundary[shifted(axis, -1)] |= touching
        boundary[shifted(axis, 1)] |= touching
    return boundary


def affinities(ids: np.ndarray, offsets: Sequence[int] = (1,)) -> np.ndarray:
    """(3 * len(offsets), X, Y, Z): channel 3 * i + a is 1 where a voxel and the voxel offsets[i] before it along
    axis a share a non-zero id (offset 1: the nearest-neighbour affinities of Lee et al. 2017; longer offsets: their
    long-range affinities); the first offsets[i] slices of each axis have no pair and are ignored."""
    out = np.full((3 * len(offsets), *ids.shape), IGNORE, dtype=np.float32)
    for i, offset in enumerate(offsets):
        for axis in range(3):
            a, b = ids[shifted(axis, -offset)], ids[shifted(axis, offset)]
            out[3 * i + axis][shifted(axis, offset)] = (a == b) & (a != 0)
    return out


def instance_targets(ids: np.ndarray, kind: TargetKind, ignore_unlabelled: bool = False,
                     offsets: Sequence[int] = (1,)) -> np.ndarray:
    """(X, Y, Z) ids -> (R, X, Y, Z) float32 targets in [0, 1], -1 where ignored.

    boundary: the boundary map (1 channel); affinity: 3 affinities per offset (see affinities).
    ignore_unlabelled: id 0 means "not annotated" (sparse labels) rather than "boundary": such voxels, and
    affinities touching them, are left out of the loss.
    """
    if kind == "affinity":
        out = affinities(ids, offsets)
        if ignore_unlabelled:
            for i, offset in enumerate(offsets):
                for axis in range(3):
                    unknown = (ids[shifted(axis, -offset)] == 0) | (ids[shifted(axis, offset)] == 0)
                    out[3 * i + axis][shifted(axis, offset)][unknown] = IGNORE
        return out
    out = boundaries(ids)[None].astype(np.float32)
    if ignore_unlabelled:
        out[:, ids == 0] = IGNORE
    return out


class InstanceTargetsd(T.MapTransform):
    """`label` (1, X, Y, Z) neuron ids -> (R, X, Y, Z) targets (see instance_targets)."""

    def __init__(self, kind: TargetKind, ignore_unlabelled: bool = False, offsets: Sequence[int] = (1,)):
        super().__init__(["label"])
        self.kind, self.ignore_unlabelled, self.offsets = kind, ignore_unlabelled, tuple(offsets)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        ids = np.asarray(d["label"])[0].astype(np.int64)  # (1, X, Y, Z) -> (X, Y, Z)
        targets = instance_targets(ids, self.kind, self.ignore_unlabelled, self.offsets)
        d["label"] = MetaTensor(torch.from_numpy(targets), meta=getattr(d["label"], "meta", {}))
        return d
