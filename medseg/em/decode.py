"""Neuron ids from predicted boundary or affinity maps: distance-transform watershed, then agglomeration.

Three agglomerations of the watershed fragments (DecodeParams.method): `boundary` merges by the mean boundary
probability on a contact (any model); `affinity` by one minus the mean predicted affinity of all voxel pairs, at every
offset the model predicts (long-range ones included), that join the two segments; `waterz` by waterz's mean-affinity
agglomeration (PyTorch Connectomics' choice; nearest-neighbour affinities only). The choice and its parameters are
made on validation data at the end of training (medseg.training.decoding) and stored with the model.

The distance-transform watershed of connectomics (e.g. `elf`'s and PlantSeg's `dt_ws`): voxels below
`boundary_threshold` are interior; the distance of each interior voxel to the nearest boundary voxel, smoothed, has
one local maximum per neurite (maxima closer than `min_distance` voxels are one); these seeds flood the boundary
map so every voxel gets an id. The watershed over-segments on purpose (a neuron cut by a gap in the predicted
boundary must not be merged with its neighbour); neighbouring segments whose contact has a mean boundary
probability below `merge_below` are merged, weakest contact first; then segments smaller than `min_size` voxels
are given to their neighbours. Sizes are voxels of the input grid.

Chosen on the shared FIB-SEM test crop with a 200-step model's boundary map (adapted Rand error): seeds from a
predicted distance-to-boundary target 0.54-0.84 (neighbours merged through gaps); this method without merging
0.29-0.31; with merging, min_distance 3: 0.10 (merge_below 0.3), 0.11 (0.4), 0.19 (0.5), 0.30 (0.7); min_distance
4-5: 0.18-0.19 for 0.3-0.5.
"""

import os
import sys
from collections.abc import Iterator, Sequence

import numpy as np
from scipy import ndimage
from skimage import feature, graph, measure, segmentation

from medseg.em.params import DEFAULT_DECODE, DecodeParams
from medseg.em.targets import shifted
from medseg.errors import MedsegError


def boundary_map(probabilities: np.ndarray, kind: str) -> np.ndarray:
    """(R, X, Y, Z) predicted maps -> (X, Y, Z) boundary probability.

    Affinity models: one minus a voxel's lowest affinity to its 6 neighbours (a voxel next to another neuron is a
    boundary voxel, as in the boundary target).
    """
    if kind == "boundary":
        return probabilities[0]
    lowest = np.ones(probabilities.shape[1:], np.float32)
    for axis in range(3):
        to_previous = np.moveaxis(probabilities[axis], axis, 0).copy()  # (axis first) affinity to the predecessor
        to_previous[0] = 1  # the first voxel has no predecessor
        to_next = np.concatenate([to_previous[1:], np.ones_like(to_previous[:1])])  # the successor's, one back
        lowest = np.minimum(lowest, np.moveaxis(np.minimum(to_previous, to_next), 0, axis))
    return 1 - lowest


def decode(probabilities: np.ndarray, kind: str, params: DecodeParams = DEFAULT_DECODE,
           offsets: Sequence[int] = (1,)) -> np.ndarray:
    """(R, X, Y, Z) probabilities -> (X, Y, Z) uint32 neuron ids 1..N; every voxel gets one.

    offsets: the affinity offsets of the channels (3 per offset, see medseg.em.targets.affinities).
    """
    boundary = boundary_map(probabilities, kind)
    ids = fragments(boundary, params)
    if params.merge_below is not None:
        ids = agglomerate_with(ids, probabilities, boundary, kind, params.method, params.merge_below, offsets)
    return finish(ids, boundary, params.min_size)


def fragments(boundary: np.ndarray, params: DecodeParams) -> np.ndarray:
    """The over-segmentation: seeds at the maxima of the smoothed distance to the boundary, flooded; ids from 1."""
    interior = boundary < params.boundary_threshold
    if not interior.any():
        return np.ones(boundary.shape, np.int64)  # boundary everywhere (an untrained model): one segment
    distance = ndimage.distance_transform_edt(interior)
    if params.smooth:
        distance = ndimage.gaussian_filter(distance, params.smooth)
    peaks = feature.peak_local_max(distance, min_distance=params.min_distance, labels=measure.label(interior),
                                   exclude_border=False)  # (N, 3) voxel indices
    seeds = np.zeros(boundary.shape, np.int64)
    seeds[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return segmentation.watershed(boundary, seeds)


def agglomerate_with(ids: np.ndarray, probabilities: np.ndarray, boundary: np.ndarray, kind: str, method: str,
                     merge_below: float, offsets: Sequence[int]) -> np.ndarray:
    """Fragments merged by `method`; ids from 1."""
    if method != "boundary" and kind != "affinity":
        raise MedsegError(f"decoding method {method!r} needs an affinity model; this one predicts {kind} maps")
    if method == "waterz":
        return waterz_agglomerate(ids, probabilities, merge_below)
    pairs = affinity_pairs(ids, probabilities, offsets) if method == "affinity" else boundary_pairs(ids, boundary)
    return merge(ids, contact_graph(ids, pairs), merge_below) + 1  # merge_hierarchical numbers from 0


def finish(ids: np.ndarray, boundary: np.ndarray, min_size: int) -> np.ndarray:
    """Small segments flooded by their neighbours, ids made 1..N (uint32)."""
    ids = segmentation.watershed(boundary, remove_small(ids, min_size))
    ids, _, _ = segmentation.relabel_sequential(ids)
    return ids.astype(np.uint32)


def waterz_agglomerate(ids: np.ndarray, probabilities: np.ndarray, thresholds: float | Sequence[float]):
    """waterz's mean-affinity agglomeration of the fragments on the nearest-neighbour affinities; one id volume
    (from 1), or an iterator of them for several thresholds (computed incrementally, in increasing order)."""
    import waterz  # compiled extension: imported when used

    # (x, y, z) channels of (X, Y, Z) arrays -> waterz's (z, y, x) channels of (Z, Y, X) arrays
    affs = np.ascontiguousarray(probabilities[[2, 1, 0]].transpose(0, 3, 2, 1), dtype=np.float32)
    frags = np.ascontiguousarray(ids.transpose(2, 1, 0), dtype=np.uint64)
    several = not isinstance(thresholds, float | int)
    runs = waterz.agglomerate(affs, list(thresholds) if several else [float(thresholds)], fragments=frags)
    out = (quietly(lambda: next(runs, None)) for _ in range(len(thresholds) if several else 1))
    out = (s.transpose(2, 1, 0).astype(np.int64) for s in out)
    return out if several else next(out)


def quietly(call):
    """call() with the process's stdout (file descriptor 1) sent to /dev/null: waterz's C++ code logs every step."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            return call()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def remove_small(ids: np.ndarray, min_size: int) -> np.ndarray:
    """ids with segments of fewer than min_size voxels set to 0 (the largest segment is always kept)."""
    sizes = np.bincount(ids.ravel())
    small = sizes < min(min_size, sizes[1:].max(initial=0))
    small[0] = True
    return np.where(small[ids], 0, ids)


def agglomerate(ids: np.ndarray, boundary: np.ndarray, merge_below: float) -> np.ndarray:
    """Merge neighbouring segments, weakest contact first, while the mean boundary probability on the contact is
    below merge_below (scikit-image's hierarchical merging on a region adjacency graph); labels from 0."""
    return merge(ids, contact_graph(ids, boundary_pairs(ids, boundary)), merge_below)


def merge(ids: np.ndarray, rag: graph.RAG, merge_below: float) -> np.ndarray:
    """Merge the graph's nodes, lowest edge weight first, while it is below merge_below; labels from 0."""
    if ids.max() < 2:
        return ids - 1
    return graph.merge_hierarchical(ids, rag, thresh=merge_below, rag_copy=False, in_place_merge=True,
                                    merge_func=_merge_boundary, weight_func=_weight_boundary)


Pairs = Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]  # (ids of one voxel, of the other, the pair's cost)


def boundary_pairs(ids: np.ndarray, boundary: np.ndarray) -> Pairs:
    """6-neighbour voxel pairs, costing the larger boundary probability of the two voxels."""
    for axis in range(3):
        first, second = shifted(axis, -1), shifted(axis, 1)
        yield ids[first], ids[second], np.maximum(boundary[first], boundary[second])


def affinity_pairs(ids: np.ndarray, probabilities: np.ndarray, offsets: Sequence[int]) -> Pairs:
    """The voxel pairs of every predicted affinity (each offset, each axis), costing one minus the affinity."""
    for i, offset in enumerate(offsets):
        for axis in range(3):
            yield ids[shifted(axis, -offset)], ids[shifted(axis, offset)], 1 - probabilities[3 * i + axis][
                shifted(axis, offset)]


def contact_graph(ids: np.ndarray, pairs: Pairs) -> graph.RAG:
    """Segments as nodes; an edge per pair of segments joined by voxel pairs, weighted by the mean cost of those
    voxel pairs (boundary: 1 across a one-voxel boundary, ~0 between two fragments of a neuron)."""
    lows, highs, values = [], [], []
    for a, b, cost in pairs:
        touching = a != b
        lows.append(np.minimum(a, b)[touching])
        highs.append(np.maximum(a, b)[touching])
        values.append(cost[touching])
    pairs, index = np.unique(np.stack([np.concatenate(lows), np.concatenate(highs)]), axis=1, return_inverse=True)
    counts = np.bincount(index)
    sums = np.bincount(index, weights=np.concatenate(values))
    rag = graph.RAG()
    rag.add_nodes_from((n, {"labels": [n]}) for n in np.unique(ids))
    for (u, v), total, count in zip(pairs.T, sums, counts, strict=True):
        rag.add_edge(int(u), int(v), weight=total / count, count=int(count))
    return rag


def _weight_boundary(rag: graph.RAG, src: int, dst: int, n: int) -> dict:
    """The merged node's contact with n: the voxel-weighted mean of the two contacts it replaces."""
    default = {"weight": 0.0, "count": 0}
    a, b = rag[src].get(n, default), rag[dst].get(n, default)
    count = a["count"] + b["count"]
    return {"count": count, "weight": (a["weight"] * a["count"] + b["weight"] * b["count"]) / max(count, 1)}


def _merge_boundary(rag: graph.RAG, src: int, dst: int) -> None:
    """Nothing to update on the nodes: edge weights are recomputed by _weight_boundary."""
