"""The settings of EM decoding (medseg.em.decode), in a module of their own: `medseg predict`'s options take their
defaults from here without importing the decoding libraries."""

from dataclasses import dataclass


@dataclass(frozen=True)
class DecodeParams:
    """boundary_threshold: interior voxels are those with a boundary probability below this.
    smooth: Gaussian sigma (voxels) applied to the distance map before its maxima are taken (0: none).
    min_distance: seeds closer than this (voxels) are one seed.
    min_size: segments smaller than this many voxels are absorbed by their neighbours.
    merge_below: merge neighbours whose contact has a mean boundary probability below this (None: no merging).
    """

    boundary_threshold: float = 0.5
    smooth: float = 1.0
    min_distance: int = 3
    min_size: int = 64
    merge_below: float | None = 0.35


DEFAULT_DECODE = DecodeParams()
