"""Quality control of a prediction: a score from the disagreement of its members, and flags for known failures.

Everything here works in the network's space (the plan's preprocessing: RAS, resampled, cropped to the non-zero
box, z-scored), where the training fingerprint was measured, so intensities and sizes compare like with like.

members: probability maps (R, X, Y, Z) of one case from several predictions that should agree — the 8 mirrorings
of `--tta`, the LR-mirrored second pass made without `--tta`, or the members of an ensemble. Their disagreement
per region is the volume variation coefficient (MONAI's TestTimeAugmentation `vvc`: SD / mean of the members'
thresholded volumes) and the mean voxel-wise SD of the probabilities inside the predicted region (the ivadomed/SCT
average uncertainty). The score (higher = less trustworthy) is the mean over regions of vvc + mean SD.
Thresholds: docs/report-qc.md, calibrated by experiments/qc_calibration.py.
"""

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from medseg.data.intensity import case_fingerprint

# calibrated in docs/report-qc.md (experiments/qc_calibration.py); flags say which rule fired
# score above which the members disagree too much: 2 members (plain + LR mirror) / more (8 mirrorings, ensembles)
HIGH_DISAGREEMENT = {2: 0.06, "more": 0.12}
HISTOGRAM_SHIFT = 3.0  # largest channel-percentile distance from the training fingerprint, in training SDs
LESION_CONTRAST_SHIFT = 2.5  # largest distance of a region's mean z per channel from the training fingerprint, SDs
BRAIN_SHAPE_SHIFT = 4.0  # brain extent (mm) along a RAS axis from the training mean, in training SDs
# SDs of few training cases are noisy: never divide by less than these
SD_FLOOR_HISTOGRAM, SD_FLOOR_LESION, SD_FLOOR_EXTENT_MM = 0.1, 0.25, 10.0
MIN_VOLUME_ML, MAX_BRAIN_FRACTION = 0.5, 0.25  # outermost region: smaller, or larger than this share of the brain
EDGE_FRACTION = 0.05  # share of the brain's outermost slice covered by lesion before it "touches the edge"
CUT_AREA = 0.25  # an outermost brain slice larger than this share of the largest one: the field cuts the brain
OUTSIDE_BRAIN_FRACTION = 0.01  # share of the lesion outside the non-zero (brain) region
SYMMETRY_DICE = 0.3  # Dice of the lesion with its mirror image across the brain's midline
HEMISPHERE_SHARE = 0.25  # each hemisphere holds at least this share of the lesion


def disagreement(members: Sequence[np.ndarray], spacing: Sequence[float], regions: Sequence[str]) -> dict:
    """Per region {vvc, mean_sd, volumes_ml} of a list of (R, X, Y, Z) member probability maps, and the score."""
    if len(members) < 2:
        raise ValueError("disagreement needs at least 2 members")
    stack = np.stack([np.asarray(m, dtype=np.float32) for m in members])  # (M, R, X, Y, Z)
    ml = float(np.prod(spacing[:3])) / 1000.0
    mean, sd = stack.mean(0), stack.std(0)
    per_region = {}
    for r, region in enumerate(regions):
        volumes = (stack[:, r] > 0.5).sum(axis=(1, 2, 3)) * ml
        inside = mean[r] > 0.5
        per_region[region] = {
            "vvc": float(volumes.std() / volumes.mean()) if volumes.mean() > 0 else 0.0,
            "mean_sd": float(sd[r][inside].mean()) if inside.any() else 0.0,
            "volumes_ml": [round(float(v), 3) for v in volumes],
        }
    score = float(np.mean([v["vvc"] + v["mean_sd"] for v in per_region.values()]))
    return {"members": len(members), "score": score, "regions": per_region}


def uncertainty(members: Sequence[np.ndarray]) -> np.ndarray:
    """(R, X, Y, Z) voxel-wise SD of the members' probabilities, in [0, 0.5]."""
    return np.stack([np.asarray(m, dtype=np.float32) for m in members]).std(0)


def shift(value: Sequence[float] | float, reference: Mapping, floor: float) -> float:
    """Largest distance of values from the reference mean, in reference SDs (at least `floor`)."""
    v, m = np.atleast_1d(np.asarray(value, float)), np.atleast_1d(np.asarray(reference["mean"], float))
    sd = np.maximum(np.atleast_1d(np.asarray(reference["sd"], float)), floor)
    return float(np.max(np.abs(v - m) / sd))


def intensity_shift(case: Mapping, fingerprint: Mapping) -> dict:
    """How far the case's brain histogram and lesion contrast lie from the training fingerprint (SDs)."""
    histogram = max((shift(p, fingerprint["percentiles"][m], SD_FLOOR_HISTOGRAM)
                     for m, p in case["percentiles"].items() if m in fingerprint["percentiles"]), default=0.0)
    lesion = max((shift(z, fingerprint["lesion_z"][r][m], SD_FLOOR_LESION)
                  for r, zs in case["lesion_z"].items() if r in fingerprint["lesion_z"]
                  for m, z in zs.items() if m in fingerprint["lesion_z"][r]), default=0.0)
    return {"histogram": histogram, "lesion_contrast": lesion}


def touches_edge(lesion: np.ndarray, brain: np.ndarray) -> list[str]:
    """Faces of the imaged field where the field cuts through the brain and the lesion reaches the cut.

    The field is the brain's bounding box (zeroed slabs count as not imaged). A face counts as a cut when the
    brain's outermost slice there is still large (over CUT_AREA of the brain's largest slice across that axis: a
    whole brain tapers to a small last slice), and the lesion covers more than EDGE_FRACTION of it."""
    box = np.argwhere(brain)
    if not box.size or not lesion.any():
        return []
    low, high = box.min(0), box.max(0)
    faces = []
    for axis, (neg, pos) in enumerate((("L", "R"), ("P", "A"), ("I", "S"))):
        areas = brain.sum(axis=tuple(a for a in range(3) if a != axis))
        for name, index in ((neg, low[axis]), (pos, high[axis])):
            b, m = np.take(brain, index, axis), np.take(lesion, index, axis)
            if b.sum() > CUT_AREA * areas.max() and (m & b).sum() > EDGE_FRACTION * b.sum():
                faces.append(name)
    return faces


def symmetric(lesion: np.ndarray, brain: np.ndarray) -> float:
    """Dice of the lesion with its mirror image across the brain's sagittal midline (RAS: axis 0), 0 when one
    hemisphere holds less than HEMISPHERE_SHARE of it (a glioma is one-sided; a model painting normal anatomy is
    not)."""
    if lesion.sum() == 0:
        return 0.0
    xs = np.nonzero(brain.any(axis=(1, 2)))[0]
    mid = (xs.min() + xs.max()) / 2 if xs.size else (lesion.shape[0] - 1) / 2
    x = np.nonzero(lesion)[0]
    left = float((x < mid).mean())
    if min(left, 1 - left) < HEMISPHERE_SHARE:
        return 0.0
    # mirror about `mid`: index i -> 2*mid - i, on the grid extended as needed
    shift_by = int(round(2 * mid - (lesion.shape[0] - 1)))
    mirrored = np.roll(lesion[::-1], shift_by, axis=0)
    if shift_by > 0:
        mirrored[:shift_by] = False
    elif shift_by < 0:
        mirrored[shift_by:] = False
    return float(2 * (lesion & mirrored).sum() / (lesion.sum() + mirrored.sum()))


def disagreement_limit(members: int) -> float:
    """The score above which `high_disagreement` is raised: 8 mirrorings disagree more than 2 on the same case."""
    return HIGH_DISAGREEMENT[2] if members <= 2 else HIGH_DISAGREEMENT["more"]


def assess(image: np.ndarray, members: Sequence[np.ndarray], spacing: Sequence[float], regions: Sequence[str],
           modalities: Sequence[str], fingerprint: Mapping | None, written_voxels: int, brain: bool = True) -> dict:
    """{"score", "flags", "details"} of one case: image (C, X, Y, Z) and members in the network's space.

    written_voxels: foreground voxels of the mask as written (after keep-largest), for `empty_prediction`.
    brain: the scan is a skull-stripped brain (MRI); EM stacks (False) get the disagreement and emptiness only."""
    agreement = disagreement(members, spacing, regions)
    mean = np.mean(np.stack(members), 0)
    predicted = mean > 0.5  # (R, X, Y, Z); region 0 is the outermost (WT for BraTS)
    lesion = predicted.any(0)
    flags, details = [], {"disagreement": agreement}
    if not brain:
        flags += ["empty_prediction"] if written_voxels == 0 else []
        flags += ["high_disagreement"] if agreement["score"] > disagreement_limit(len(members)) else []
        return {"score": round(agreement["score"], 4), "flags": flags, "details": details}
    case = case_fingerprint(image, predicted, spacing, regions, modalities)
    brain = np.any(image != 0, axis=0)
    outer_ml = float(lesion.sum()) * float(np.prod(spacing[:3])) / 1000.0
    details["lesion_ml"], details["brain_ml"] = outer_ml, case["brain_ml"]
    if written_voxels == 0:
        flags.append("empty_prediction")
    elif outer_ml < MIN_VOLUME_ML or outer_ml > MAX_BRAIN_FRACTION * case["brain_ml"]:
        flags.append("implausible_volume")
    faces = touches_edge(lesion, brain)
    details["edge_faces"] = faces
    if faces:
        flags.append("touches_edge")
    outside = float((lesion & ~brain).sum() / lesion.sum()) if lesion.any() else 0.0
    details["outside_brain_fraction"] = outside
    if outside > OUTSIDE_BRAIN_FRACTION:
        flags.append("outside_brain")
    details["symmetry_dice"] = symmetric(ndimage.binary_opening(lesion), brain) if lesion.any() else 0.0
    if details["symmetry_dice"] > SYMMETRY_DICE:
        flags.append("bilateral_symmetric")
    if fingerprint:
        shifts = intensity_shift(case, fingerprint)
        details["intensity_shift"] = shifts
        if shifts["histogram"] > HISTOGRAM_SHIFT or shifts["lesion_contrast"] > LESION_CONTRAST_SHIFT:
            flags.append("intensity_shift")
        details["brain_shape_shift"] = shift(case["brain_extent_mm"], fingerprint["brain_extent_mm"],
                                             SD_FLOOR_EXTENT_MM)
        if details["brain_shape_shift"] > BRAIN_SHAPE_SHIFT:  # a wrong orientation, or part of the brain missing
            flags.append("brain_shape")
    else:
        details["intensity_shift"] = "no training fingerprint in this model: not checked"
    if agreement["score"] > disagreement_limit(len(members)):
        flags.append("high_disagreement")
    return {"score": round(agreement["score"], 4), "flags": flags, "details": details}
