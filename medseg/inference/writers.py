"""Outputs of a prediction on the input's grid: the label map and the region probability maps."""

from pathlib import Path

import numpy as np

from medseg.data.io import NIFTI, Volume, suffix, write_mask
from medseg.errors import MedsegError


def write_probabilities(probabilities: np.ndarray, reference: Volume, out: Path) -> None:
    """(R, X, Y, Z) region probabilities as one float32 NIfTI with the regions on the 4th axis, in the convention's
    region order, with the input's header: thresholding it at 0.5 gives the written mask."""
    if suffix(out) not in NIFTI:
        raise MedsegError(f"{out}: probability maps are written as NIfTI (.nii.gz)")
    write_mask(np.moveaxis(probabilities.astype(np.float32), 0, -1), reference, out)  # (R, X, Y, Z) -> (X, Y, Z, R)
