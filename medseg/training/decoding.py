"""Decoding parameters chosen on validation data at the end of training and stored with the model.

`medseg train` on an EM neuron recipe predicts the validation volumes with best.ckpt (as `medseg predict` does),
decodes them over a grid of methods, seed distances and merge thresholds, and writes the best setting into
best.ckpt's plan (`decode`), with the whole table beside it (checkpoints/decode_tuning.json). `medseg predict`
then decodes with what the model was validated with; its flags override single values.

The setting is ranked by the CREMI score, sqrt(VOI split + merge x adapted Rand error) (lower is better), the mean
over the validation volumes: both errors count, neither can be traded away for the other alone.
"""

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from medseg.data.io import read_volume
from medseg.em.decode import (
    DEFAULT_DECODE,
    DecodeParams,
    agglomerate_with,
    boundary_map,
    finish,
    fragments,
    waterz_agglomerate,
)
from medseg.evaluation.metrics import instance_metrics
from medseg.inference.predictor import Predictor
from medseg.utils.files import atomic_write

METHODS = {"boundary": ("boundary",), "affinity": ("boundary", "affinity", "waterz")}
MIN_DISTANCES = (2, 3, 4)
# waterz agglomerates incrementally (every threshold for the price of one); scikit-image's merging starts over for
# each threshold, and on long-range affinities takes ~10x a waterz run: a coarser grid for those
THRESHOLDS = {"waterz": tuple(round(0.05 * i, 2) for i in range(1, 17)), "boundary": (0.2, 0.35, 0.5),
              "affinity": (0.2, 0.35, 0.5)}


def cremi(scores: Mapping[str, float]) -> float:
    """The CREMI challenge's combined neuron score: geometric mean of VOI (split + merge) and adapted Rand error."""
    return math.sqrt(scores["voi"] * scores["adapted_rand_error"])


def decodings(probabilities: np.ndarray, kind: str, offsets: Sequence[int], method: str, min_distance: int,
              thresholds: Sequence[float]) -> Iterable[tuple[DecodeParams, np.ndarray]]:
    """(params, ids) for every threshold; the fragments are made once (and waterz agglomerates incrementally)."""
    base = replace(DEFAULT_DECODE, method=method, min_distance=min_distance)
    boundary = boundary_map(probabilities, kind)
    frags = fragments(boundary, base)
    if method == "waterz":
        merged = waterz_agglomerate(frags, probabilities, list(thresholds))
    else:
        merged = (agglomerate_with(frags, probabilities, boundary, kind, method, t, offsets) for t in thresholds)
    for t, ids in zip(thresholds, merged, strict=True):
        yield replace(base, merge_below=t), finish(ids, boundary, base.min_size)


def tune(cases: Sequence[tuple[np.ndarray, np.ndarray]], kind: str, offsets: Sequence[int] = (1,),
         methods: Sequence[str] | None = None, min_distances: Sequence[int] = MIN_DISTANCES,
         thresholds: Sequence[float] | None = None) -> tuple[DecodeParams, list[dict]]:
    """The best DecodeParams over (probabilities (R, X, Y, Z), true ids (X, Y, Z)) cases, and every setting's mean
    scores (rows sorted best first). thresholds: merge_below values (None: THRESHOLDS of each method)."""
    totals: dict[DecodeParams, list[dict]] = {}
    for probabilities, truth in cases:
        for method in methods or METHODS[kind]:
            for min_distance in min_distances:
                grid = thresholds or THRESHOLDS[method]
                for params, ids in decodings(probabilities, kind, offsets, method, min_distance, grid):
                    totals.setdefault(params, []).append(instance_metrics(ids, truth) | {"segments": int(ids.max())})
    rows = []
    for params, scores in totals.items():
        mean = {k: float(np.mean([s[k] for s in scores])) for k in ("adapted_rand_error", "voi_split", "voi_merge",
                                                                     "voi", "segments")}
        rows.append({**asdict(params), **mean, "cremi": cremi(mean)})
    rows.sort(key=lambda r: r["cremi"])
    best = rows[0]
    return DecodeParams(**{k: best[k] for k in asdict(DEFAULT_DECODE)}), rows


def tune_checkpoint(ckpt: Path, val_cases: Sequence[Mapping], device: str = "auto") -> DecodeParams:
    """Predict the validation cases with `ckpt`, tune the decoding on them, store it in the checkpoint's plan and
    write the table to decode_tuning.json beside it."""
    predictor = Predictor(ckpt, device=device)
    convention = predictor.plan.convention
    cases = []
    for case in val_cases:
        files = [case["image"]] if isinstance(case["image"], str) else list(case["image"])
        probabilities = predictor.predict_case(files).probabilities
        truth = np.asarray(read_volume(case["label"], predictor.plan.voxel_size).array, dtype=np.int64)
        cases.append((probabilities, truth))
    params, rows = tune(cases, convention.targets, convention.offsets)
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)
    stored["medseg"]["decode"] = asdict(params)
    atomic_write(ckpt, lambda target: torch.save(stored, target))
    table = {"checkpoint": ckpt.name, "validation": [str(c["image"]) for c in val_cases], "chosen": asdict(params),
             "ranked_by": "cremi = sqrt(voi * adapted_rand_error), mean over the validation cases", "rows": rows}
    atomic_write(ckpt.parent / "decode_tuning.json", lambda target: target.write_text(json.dumps(table, indent=1)))
    return params
