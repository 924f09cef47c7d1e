"""Checks that a label lies on its image's voxel grid and that a training set's labels fit the convention.

A label with a flipped or shifted affine has the right shape, so nothing else notices it: the network would learn
from a mirrored or offset target. The grid is compared as nnU-Net's verify_dataset_integrity does (spacing, origin
and direction, np.allclose), with the relaxed tolerance of its later versions (rtol 1e-3, atol 1e-4) so float32
header rounding passes. Everything here raises MedsegError naming the file, so `medseg train` stops before training.
"""

from collections.abc import Iterable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from medseg.data.io import ITK, NIFTI, itk_affine, read_volume, suffix
from medseg.errors import MedsegError
from medseg.labels import ET_IS_4, Convention, looks_like_brats2023

RTOL, ATOL = 1e-3, 1e-4


def grid(affine: np.ndarray) -> dict[str, np.ndarray]:
    """Spacing, origin and direction (unit columns) of a 4x4 voxel-to-world affine."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    return {"spacing": spacing, "origin": affine[:3, 3], "direction": affine[:3, :3] / spacing}


def check_label_grid(label: Path, label_shape: Sequence[int], label_affine: np.ndarray,
                     image: Path, image_shape: Sequence[int], image_affine: np.ndarray) -> None:
    """Raise naming the label file if its shape, spacing, origin or direction differs from its image's."""
    if tuple(label_shape[:3]) != tuple(image_shape[:3]):
        raise MedsegError(f"{label}: label shape {tuple(label_shape)} differs from image {tuple(image_shape)} "
                          f"({image})")
    ours, theirs = grid(label_affine), grid(image_affine)
    for what in ("spacing", "origin", "direction"):
        if not np.allclose(ours[what], theirs[what], rtol=RTOL, atol=ATOL):
            show = lambda a: np.round(a, 4).tolist()  # noqa: E731
            raise MedsegError(f"{label}: label {what} {show(ours[what])} differs from the image's {show(theirs[what])}"
                              f" ({image}); the label must be on its image's voxel grid (flipped or shifted?)")


def read_header(path: str | Path) -> tuple[tuple[int, ...], np.ndarray] | None:
    """Shape and affine from the header alone (no voxel data read); None for EM stacks, which carry no geometry."""
    path = Path(path)
    try:
        if suffix(path) in NIFTI:
            img = nib.load(path)
            return tuple(img.shape), img.affine.astype(np.float64)
        if suffix(path) in ITK:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            return tuple(reader.GetSize()), itk_affine(reader)  # GetSize is (X, Y, Z), as medseg's arrays
    except (OSError, RuntimeError, nib.filebasedimages.ImageFileError) as e:
        raise MedsegError(f"{path}: not a readable image header ({type(e).__name__}: {e})") from None
    return None


def check_case_headers(case: dict) -> None:
    """Compare the label's header geometry with the case's first image file, without reading any voxels."""
    images = [case["image"]] if isinstance(case["image"], str) else case["image"]
    image, label = read_header(images[0]), read_header(case["label"])
    if image is not None and label is not None:
        check_label_grid(Path(case["label"]), label[0], label[1], Path(images[0]), image[0], image[1])


def label_values(array: np.ndarray) -> dict[int, int]:
    """Voxel count per label value; bincount for the usual small non-negative integer labels (much faster)."""
    flat = np.asarray(array).ravel()
    if np.issubdtype(flat.dtype, np.integer) and flat.size and 0 <= flat.min() and flat.max() < 65536:
        counts = np.bincount(flat)
        return {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
    values, counts = np.unique(flat, return_counts=True)
    return {int(v) if float(v).is_integer() else float(v): int(c) for v, c in zip(values, counts, strict=True)}


def brats2023_error(convention: Convention, values: Iterable[int], where: str) -> MedsegError | None:
    """The error for a BraTS 2023 training set read under a 2013/2021 convention, or None."""
    if not looks_like_brats2023(convention, set(values)):
        return None
    return MedsegError(f"{where}: the labels hold 3 but never 4, as BraTS 2023 data does (3 = enhancing tumour); "
                       f"{convention.name} would train on an empty ET target: use --data.label_convention=brats2023")


def check_training_set(cases: list[dict], convention: Convention, where: str) -> None:
    """Before any caching: every label's header geometry, then (BraTS 2013/2021 only) the set's label values.

    The value scan stops at the first label holding 4, which a BraTS 2013-2021 set's first tumour case does, so it
    reads every label only for the sets it is about to reject.
    """
    for case in cases:
        check_case_headers(case)
    if convention.name not in ET_IS_4:
        return
    seen: set[int] = set()
    for case in cases:
        seen |= set(label_values(read_volume(case["label"]).array))
        if 4 in seen:
            return
    if error := brats2023_error(convention, seen, where):
        raise error
