"""Neuron ids for an EM volume larger than memory: HDF5 in, HDF5 out, one slab of sections at a time.

Method: the volume is cut along z into slabs of `chunk` sections. Each slab is predicted and decoded together
with `halo` sections on both sides (context for the sliding window, and an overlap with the previous slab); only its
own sections are written. Ids are made consistent across a border by the overlap: a segment of the new slab takes
the id of the already written segment it shares most voxels with in the `halo` sections below its border, when
that covers at least half of its voxels there; otherwise it gets a new id.

Limits: the earlier slab's decisions win at a border (a neuron the new slab splits in two is joined again only if
both parts overlap the same old id; two neurons the old slab merged stay merged), normalisation statistics are
each slab's own (z-score), and memory is one slab with its halo plus its probabilities.
"""

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
from monai.data import MetaTensor
from tqdm import tqdm

from medseg.data.io import the_dataset
from medseg.em.decode import DecodeParams, decode
from medseg.errors import MedsegError
from medseg.inference.predictor import Predictor
from medseg.utils.files import atomic_write

# (z0, z1) -> (R, X, Y, z1 - z0) probabilities of those sections (the volume's z range, clipped)
ProbabilitySource = Callable[[int, int], np.ndarray]
MIN_SHARE = 0.5  # of a new segment's voxels in the overlap that must lie in one old segment to take its id


def chunked_ids(probabilities: ProbabilitySource, depth: int, kind: str, params: DecodeParams, chunk: int,
                halo: int, write: Callable[[int, int, np.ndarray], None]) -> int:
    """Decode a volume of `depth` sections slab by slab; write(z0, z1, ids) receives each slab's (X, Y, z1 - z0)
    uint32 ids, already consistent with the slabs before it. Returns the number of ids used."""
    if chunk < 1 or halo < 0:
        raise MedsegError(f"--chunk must be >= 1 and the halo >= 0, got {chunk} and {halo}")
    previous: np.ndarray | None = None  # the last written slab's ids (X, Y, its depth)
    next_id = 1
    for z0 in tqdm(range(0, depth, chunk), desc="slabs", unit="slab"):
        z1 = min(depth, z0 + chunk)
        lo, hi = max(0, z0 - halo), min(depth, z1 + halo)
        ids = decode(probabilities(lo, hi), kind, params).astype(np.int64)  # (X, Y, hi - lo)
        new = relabel(ids, previous[..., previous.shape[2] - (z0 - lo):] if previous is not None else None,
                      next_id)
        slab = new[..., z0 - lo : z1 - lo].astype(np.uint32)
        next_id = max(next_id, int(slab.max(initial=0)) + 1)
        write(z0, z1, slab)
        previous = slab
    return next_id - 1


def relabel(ids: np.ndarray, written: np.ndarray | None, next_id: int) -> np.ndarray:
    """A slab's ids mapped onto the written ids they overlap in its first `written.shape[2]` sections, the others
    to fresh ids from next_id on."""
    mapping = np.zeros(int(ids.max()) + 1, dtype=np.int64)
    if written is not None and written.shape[2]:
        new, old = ids[..., : written.shape[2]].ravel(), written.astype(np.int64).ravel()
        pairs, counts = np.unique(np.stack([new, old]), axis=1, return_counts=True)  # (2, P): (new id, old id)
        totals = np.bincount(new, minlength=mapping.size)
        for (n, o), c in zip(pairs.T, counts, strict=True):
            if o and c >= MIN_SHARE * totals[n]:
                mapping[n] = o
    fresh = np.flatnonzero(mapping == 0)[1:]  # id 0 stays 0
    mapping[fresh] = np.arange(next_id, next_id + fresh.size)
    return mapping[ids]


def predict_h5(predictor: Predictor, path: Path, out: Path, chunk: int, halo: int | None = None) -> int:
    """`medseg predict big.h5 --chunk N --output ids.h5`: read and write slab by slab. Returns the id count."""
    kind = predictor.plan.convention.targets
    if not predictor.plan.convention.instances:
        raise MedsegError("--chunk is for EM neuron models (em_boundary / em_affinity)")
    halo = predictor.plan.patch_size[2] // 2 if halo is None else halo
    voxel = np.asarray(predictor.plan.voxel_size or (1.0, 1.0, 1.0), dtype=float)  # (z, y, x) nm
    affine = np.diag([voxel[2], voxel[1], voxel[0], 1.0])
    with h5py.File(path, "r") as f:
        data = the_dataset(f, path)
        if data.ndim != 3:
            raise MedsegError(f"{path}: --chunk needs a 3D (z, y, x) dataset, got shape {data.shape}")
        depth, height, width = data.shape

        def probabilities(z0: int, z1: int) -> np.ndarray:
            sections = data[z0:z1].astype(np.float32).transpose(2, 1, 0)[None]  # (Z, Y, X) -> (1, X, Y, Z)
            return predictor.probabilities(MetaTensor(sections, affine=affine), path)

        def write_all(target: Path) -> int:
            with h5py.File(target, "w") as g:
                ids = g.create_dataset("main", (depth, height, width), dtype=np.uint32, compression="gzip",
                                       chunks=(min(depth, 16), min(height, 256), min(width, 256)))
                ids.attrs["resolution"] = voxel

                def write(z0: int, z1: int, slab: np.ndarray) -> None:
                    ids[z0:z1] = slab.transpose(2, 1, 0)  # (X, Y, Z) -> (Z, Y, X)

                return chunked_ids(probabilities, depth, kind, predictor.decode, chunk, halo, write)

        count: list[int] = []
        atomic_write(out, lambda target: count.append(write_all(target)))
    return count[0]

