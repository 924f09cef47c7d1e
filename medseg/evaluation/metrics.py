"""Segmentation metrics for one case, on arrays: MONAI for Dice and surface distances, scikit-image for EM instances.

Empty regions follow the BraTS challenge (2021 CaPTk evaluation): both empty → Dice 1, HD95 0, NSD 1; one empty
→ Dice 0, NSD 0, HD95 = the diagonal of the ground truth's grid in mm (373.13 on the 240×240×155 1 mm BraTS grid,
BraTS's own penalty), because no boundary exists to measure a distance to. MONAI would give NaN or inf there.
"""

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice
from skimage.metrics import adapted_rand_error, variation_of_information

from medseg.labels import Convention, get_convention

# NSD tolerance: 1 mm is one voxel on 1 mm BraTS scans — it forgives a one-voxel boundary shift (resampling,
# rounding) and nothing more; it is the value nnU-Net's maintainers asked for when surface metrics were proposed.
DEFAULT_TOLERANCE_MM = 1.0


def evaluate_case(pred: np.ndarray, truth: np.ndarray, convention: str, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                  tolerance: float = DEFAULT_TOLERANCE_MM, instances: bool = False) -> dict[str, dict[str, float]]:
    """Metrics per region for two (X, Y, Z) label maps on the same grid; spacing in mm (ignored for EM).

    Which metrics follows the data: `instances` → VOI split/merge and adapted Rand error of neuron-id volumes;
    an EM convention (any non-negative label, e.g. em_membrane) → membrane F1 of a binary mask; otherwise the
    convention's regions (BraTS wt/tc/et) → Dice, HD95, NSD and volumes.
    """
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground truth shape {truth.shape}")
    conv = get_convention(convention)
    if instances:
        return {"instances": instance_metrics(pred, truth)}
    if conv.labels is None:
        return membrane_metrics(pred, truth, conv)
    return region_metrics(pred, truth, conv, spacing, tolerance)


def region_metrics(pred: np.ndarray, truth: np.ndarray, conv: Convention, spacing: Sequence[float],
                   tolerance: float) -> dict[str, dict[str, float]]:
    """Dice, HD95 (mm), NSD at `tolerance` mm and volumes (mL) for each of the convention's regions."""
    spacing = [float(s) for s in spacing]
    ml_per_voxel = float(np.prod(spacing)) / 1000.0
    diagonal = float(np.linalg.norm(np.array(truth.shape) * spacing))
    p_regions, t_regions = conv.to_regions(pred[None]), conv.to_regions(truth[None])  # (R, X, Y, Z) each
    scores = {}
    for name, p, t in zip(conv.regions, p_regions, t_regions, strict=True):
        n_pred, n_true = int(p.sum()), int(t.sum())
        scores[name] = {**overlap_and_distance(p, t, n_pred, n_true, spacing, tolerance, diagonal),
                        "volume_pred_ml": n_pred * ml_per_voxel, "volume_true_ml": n_true * ml_per_voxel}
    return scores


def overlap_and_distance(p: np.ndarray, t: np.ndarray, n_pred: int, n_true: int, spacing: list[float],
                         tolerance: float, diagonal: float) -> dict[str, float]:
    """Dice, HD95 and NSD of one binary region; the empty cases answered as BraTS does (module docstring)."""
    if n_pred == 0 and n_true == 0:
        return {"dice": 1.0, "hd95": 0.0, "nsd": 1.0}
    if n_pred == 0 or n_true == 0:
        return {"dice": 0.0, "hd95": diagonal, "nsd": 0.0}
    yp, yt = (torch.from_numpy(x)[None, None] for x in (p, t))  # (1, 1, X, Y, Z): batch of one, one channel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's empty-class warnings: both masks are known to be non-empty here
        dice = compute_dice(yp, yt, include_background=True)
        hd95 = compute_hausdorff_distance(yp, yt, include_background=True, percentile=95, spacing=spacing)
        nsd = compute_surface_dice(yp, yt, [tolerance], include_background=True, spacing=spacing)
    return {"dice": float(dice), "hd95": float(hd95), "nsd": float(nsd)}


def membrane_metrics(pred: np.ndarray, truth: np.ndarray, conv: Convention) -> dict[str, dict[str, float]]:
    """Voxel-wise precision, recall and F1 of each EM region (em_membrane: the membrane).

    Prediction and ground truth are read in the convention (ISBI 2012, neuron-id volumes and medseg's EM masks:
    0 = membrane).
    """
    painted = prediction_regions(pred, conv)
    scores = {}
    for name, t in zip(conv.regions, conv.to_regions(truth[None]).astype(bool), strict=True):
        p = painted[name]
        tp = int(np.count_nonzero(p & t))
        n_pred, n_true = int(p.sum()), int(t.sum())
        precision = tp / n_pred if n_pred else float(n_true == 0)
        recall = tp / n_true if n_true else float(n_pred == 0)
        f1 = 2 * tp / (n_pred + n_true) if n_pred + n_true else 1.0
        scores[name] = {"f1": f1, "precision": precision, "recall": recall}
    return scores


def prediction_regions(label: np.ndarray, conv: Convention) -> dict[str, np.ndarray]:
    """Boolean (X, Y, Z) region masks of a label map: `medseg predict` writes the convention's own values
    (BraTS {0, 1, 2, 4}; em_membrane 0 = membrane, 255 = interior), so predictions read as ground truth does."""
    return dict(zip(conv.regions, conv.to_regions(label[None]).astype(bool), strict=True))


def instance_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Variation of information (split, merge; bits) and adapted Rand error of two neuron-id volumes.

    Ground-truth voxels labelled 0 (boundary or unlabelled) are ignored, as in CREMI and scikit-image's default.
    Split = H(pred | truth) (one neuron cut into pieces), merge = H(truth | pred) (neurons fused).
    """
    pred, truth = np.asarray(pred, dtype=np.int64), np.asarray(truth, dtype=np.int64)
    split, merge = variation_of_information(truth, pred, ignore_labels=(0,))
    error, precision, recall = adapted_rand_error(truth, pred, ignore_labels=(0,))
    return {"voi_split": float(split), "voi_merge": float(merge), "voi": float(split + merge),
            "adapted_rand_error": float(error), "rand_precision": float(precision), "rand_recall": float(recall)}
