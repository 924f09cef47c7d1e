"""Outputs of a prediction on the input's grid: the label map and the region probability maps."""

from pathlib import Path

import numpy as np

from medseg.data.io import HDF5, NIFTI, Volume, suffix, write_h5, write_mask, zyx
from medseg.errors import MedsegError
from medseg.utils.files import atomic_write


def write_probabilities(probabilities: np.ndarray, reference: Volume, out: Path) -> None:
    """(R, X, Y, Z) region probabilities as one float32 NIfTI with the regions on the 4th axis, in the convention's
    region order, with the input's header: thresholding it at 0.5 gives the written mask. EM stacks may also
    write HDF5: one (R, Z, Y, X) dataset, channels first as PyTorch Connectomics stores affinities."""
    em = reference.source is None
    if em and suffix(out) in HDF5:
        maps = np.stack([zyx(p) for p in probabilities.astype(np.float32)])  # (R, X, Y, Z) -> (R, Z, Y, X)
        atomic_write(out, lambda p: write_h5(p, maps, np.diag(reference.affine)[2::-1]))
        return
    if suffix(out) not in NIFTI:
        raise MedsegError(f"{out}: probability maps are written as NIfTI (.nii.gz)" + (" or HDF5 (.h5)" if em else ""))
    write_mask(np.moveaxis(probabilities.astype(np.float32), 0, -1), reference, out)  # (R, X, Y, Z) -> (X, Y, Z, R)
