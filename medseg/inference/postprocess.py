"""Postprocessing of a predicted label map, stored in the model's plan (decided on held-out cases, as nnU-Net does)
and overridable from the command line: what is not FLAIR-hyperintense dropped, then the largest lesion kept.

Edema and a glioma's whole tumour are FLAIR-hyperintense by definition (BraTS outlines them on FLAIR), and what
models trained on the shared cases paint on normal brain is not: enhancing venous sinuses along the falx, cortex,
white matter (docs/robustness.md)."""

import numpy as np
from monai import transforms as T
from scipy import ndimage

from medseg.data.plan import Plan

FLAIR_QUANTILE = 75  # the component's FLAIR percentile compared with the threshold: necrotic cores are FLAIR-dark
EDEMA_FLAIR_Z = 0.0  # edema is brighter than the brain's mean FLAIR


def largest_component(labels: np.ndarray) -> np.ndarray:
    """The label map with every voxel outside the largest 26-connected component of the foreground (all labels
    together) set to 0: stray false-positive blobs go, the main lesion keeps its inner labels. Evidence:
    docs/prediction.md#keep-the-largest-lesion."""
    keep = T.KeepLargestConnectedComponent(independent=False, connectivity=3)
    return np.asarray(keep(labels[None].copy()))[0].astype(labels.dtype)  # (1, X, Y, Z); MONAI writes in place


def brain_z(channel: np.ndarray) -> np.ndarray:
    """(X, Y, Z) z-score over the brain (the voxels above the channel's minimum, the skull-stripped background)."""
    shifted = channel.astype(np.float32) - channel.min()
    brain = shifted > 0
    if not brain.any():
        return np.zeros_like(shifted)
    values = shifted[brain]
    return (shifted - values.mean()) / max(float(values.std()), 1e-6)


def drop_flair_normal(labels: np.ndarray, z: np.ndarray, min_z: float) -> np.ndarray:
    """Labels with every 26-connected lesion whose FLAIR 75th percentile lies below `min_z` brain SDs removed
    (z: FLAIR z-scored over the brain, brain_z).

    On the 7 shared cases the reference lesions' 75th percentile is 1.7-3.1 SDs; what models trained on them paint
    on normal brain stays below 0.8."""
    components, count = ndimage.label(labels > 0, structure=np.ones((3, 3, 3)))
    if count == 0:
        return labels
    order = np.argsort(components, axis=None)
    bounds = np.searchsorted(components.ravel()[order], np.arange(1, count + 2))
    flat = z.ravel()[order]
    normal = [i + 1 for i in range(count)
              if np.percentile(flat[bounds[i]:bounds[i + 1]], FLAIR_QUANTILE) < min_z]
    out = labels.copy()
    out[np.isin(components, normal)] = 0
    return out


def drop_dark_edema(labels: np.ndarray, z: np.ndarray, plan: Plan) -> np.ndarray:
    """Labels with edema (whole tumour outside the tumour core) removed where FLAIR is darker than the brain mean:
    at most 2.2 % of the reference whole tumour on the shared cases (0.1-0.4 % on four of them), while much of
    what the models paint as edema far from the tumour is cortex and white matter below it."""
    regions = plan.convention.regions
    if not {"wt", "tc"} <= set(regions):
        return labels
    edema = np.isin(labels, sorted(regions["wt"] - regions["tc"]))
    out = labels.copy()
    out[edema & (z < EDEMA_FLAIR_Z)] = 0
    return out


def postprocess(labels: np.ndarray, image: np.ndarray, plan: Plan, keep_largest: bool,
                lesion_flair_z: float | None) -> np.ndarray:
    """(X, Y, Z) label map of a region model, the (C, X, Y, Z) input on its grid in the model's channel order ->
    the label map predict writes. With `lesion_flair_z` (and a FLAIR channel): FLAIR-dark edema, then FLAIR-normal
    lesions dropped, before keep-largest."""
    if lesion_flair_z is not None and "flair" in plan.modalities:
        z = brain_z(image[plan.modalities.index("flair")])  # FLAIR z-scored over the brain, for both rules
        labels = drop_flair_normal(drop_dark_edema(labels, z, plan), z, lesion_flair_z)
    return largest_component(labels) if keep_largest else labels
