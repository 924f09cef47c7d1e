"""The settings of EM decoding (medseg.em.decode), in a module of their own: `medseg predict`'s options take their
defaults from here without importing the decoding libraries."""

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class DecodeParams:
    """boundary_threshold: interior voxels are those with a boundary probability below this.
    smooth: Gaussian sigma (voxels) applied to the distance map before its maxima are taken (0: none).
    min_distance: seeds closer than this (voxels) are one seed.
    min_size: segments smaller than this many voxels are absorbed by their neighbours.
    merge_below: merge neighbours whose contact has a mean boundary probability (method `boundary`) or one minus
        mean affinity (`affinity`, `waterz`) below this (None: no merging).
    method: the agglomeration (medseg.em.decode); `affinity` and `waterz` need an affinity model.
    """

    boundary_threshold: float = 0.5
    smooth: float = 1.0
    min_distance: int = 3
    min_size: int = 64
    merge_below: float | None = 0.35
    method: Literal["boundary", "affinity", "waterz"] = "boundary"


DEFAULT_DECODE = DecodeParams()
