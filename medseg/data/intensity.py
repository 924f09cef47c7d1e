"""The training fingerprint: what preprocessed training cases look like, stored in the plan for quality control.

Per channel the percentiles of the z-scored brain, per region the mean z of each channel inside it and its volume,
and the brain's extent and volume, each as mean and SD over (at most MAX_FINGERPRINT_CASES) training cases.
medseg.inference.qc compares every prediction's own numbers with them (docs/report-qc.md).
"""

from collections.abc import Mapping, Sequence

import numpy as np

PERCENTILES = (1, 5, 25, 50, 75, 95, 99)  # of each z-scored channel inside the brain
FINGERPRINT_VERSION = 1
MAX_FINGERPRINT_CASES = 20  # training cases read for the fingerprint (a seeded sample of larger sets)


def case_fingerprint(image: np.ndarray, regions: np.ndarray, spacing: Sequence[float],
                     names: Sequence[str], modalities: Sequence[str]) -> dict:
    """What one preprocessed case looks like: per channel the percentiles of its z-scored brain voxels, per region
    the mean z of each channel inside it and its volume, and the brain's extent (mm) along each RAS axis.

    image: (C, X, Y, Z) after the plan's preprocessing; regions: (R, X, Y, Z) binary (ground truth at training,
    the prediction at inference)."""
    brain = np.any(image != 0, axis=0)
    ml = float(np.prod(spacing[:3])) / 1000.0
    out: dict = {"percentiles": {}, "lesion_z": {}, "volumes_ml": {}}
    for c, m in enumerate(modalities):
        values = image[c][brain] if brain.any() else image[c].ravel()
        out["percentiles"][m] = [float(v) for v in np.percentile(values, PERCENTILES)]
    for r, region in enumerate(names):
        mask = regions[r] > 0
        out["volumes_ml"][region] = float(mask.sum()) * ml
        if mask.any():
            out["lesion_z"][region] = {m: float(image[c][mask].mean()) for c, m in enumerate(modalities)}
    box = np.argwhere(brain)
    extent = (box.max(0) - box.min(0) + 1) * np.asarray(spacing[:3]) if box.size else np.zeros(3)
    out["brain_extent_mm"] = [float(e) for e in extent]
    out["brain_ml"] = float(brain.sum()) * ml
    return out


def merge_fingerprints(cases: Sequence[Mapping]) -> dict:
    """The training fingerprint: mean and SD over cases of every per-case number (a plain-JSON dict)."""
    def stats(values: list) -> dict:
        a = np.asarray(values, dtype=float)
        return {"mean": a.mean(0).tolist(), "sd": (a.std(0, ddof=1) if len(a) > 1 else np.zeros_like(a[0])).tolist()}

    first = cases[0]
    lesion = {}
    for region in {r for c in cases for r in c["lesion_z"]}:
        with_region = [c["lesion_z"][region] for c in cases if region in c["lesion_z"]]
        lesion[region] = {m: stats([z[m] for z in with_region]) for m in with_region[0]}
    return {
        "version": FINGERPRINT_VERSION, "cases": len(cases), "percentiles_at": list(PERCENTILES),
        "percentiles": {m: stats([c["percentiles"][m] for c in cases]) for m in first["percentiles"]},
        "lesion_z": lesion,
        "volumes_ml": {r: {"min": min(c["volumes_ml"][r] for c in cases), "max": max(c["volumes_ml"][r] for c in cases)}
                       for r in first["volumes_ml"]},
        "brain_extent_mm": stats([c["brain_extent_mm"] for c in cases]),
        "brain_ml": stats([c["brain_ml"] for c in cases]),
    }


def training_fingerprint(transform, cases: Sequence[Mapping], names: Sequence[str], modalities: Sequence[str],
                         seed: int = 0) -> dict:
    """The fingerprint of (at most MAX_FINGERPRINT_CASES of) the training cases, read through `transform` (the
    plan's case_transform with labels, giving normalised (C, ...) images and (R, ...) region masks)."""
    rng = np.random.default_rng(seed)
    picked = [cases[i] for i in sorted(rng.permutation(len(cases))[:MAX_FINGERPRINT_CASES])]
    prints = []
    for case in picked:
        d = transform({"image": case["image"], "label": case["label"]})
        spacing = [float(s) for s in d["image"].pixdim[:3]]
        prints.append(case_fingerprint(np.asarray(d["image"]), np.asarray(d["label"]), spacing, names, modalities))
    return merge_fingerprints(prints)
