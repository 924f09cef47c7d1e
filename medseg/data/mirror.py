"""A tumour-free brain from a patient's scan: the healthier hemisphere mirrored over the other one. Training shows
it to the model (RandHealthyMirrord) and `medseg robustness` scores a model on it."""

import nibabel as nib
import numpy as np


def healthy_mirror(image: np.ndarray, label: np.ndarray, brain: np.ndarray,
                   affine: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """The hemisphere (split at the brain's centre along the left-right axis of `affine`, else the first axis)
    with less tumour mirrored over the other one: a brain with (almost) no tumour. Returns the image, the
    matching label and the side kept (0: the low-index half)."""
    axis = [i for i, c in enumerate(nib.orientations.aff2axcodes(affine)) if c in "LR"][0] if affine is not None else 0
    if axis:
        img, lab, side = healthy_mirror(np.moveaxis(image, axis + 1, 1), np.moveaxis(label, axis, 0),
                                        np.moveaxis(brain, axis, 0))
        return np.moveaxis(img, 1, axis + 1), np.moveaxis(lab, 0, axis), side
    xs = np.nonzero(brain.any(axis=(1, 2)))[0]
    mid = int(round((xs.min() + xs.max()) / 2))
    half = min(mid, brain.shape[0] - mid)
    lo, hi = slice(mid - half, mid), slice(mid, mid + half)
    side = int((label[lo] > 0).sum() > (label[hi] > 0).sum())  # 1: the high-index half is healthier
    img, lab = image.copy(), label.copy()
    if side:
        img[:, lo], lab[lo] = image[:, hi][:, ::-1], label[hi][::-1]
    else:
        img[:, hi], lab[hi] = image[:, lo][:, ::-1], label[lo][::-1]
    return img, lab, side
