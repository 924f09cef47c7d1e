"""Reading volumes safely and writing masks that keep the input's exact geometry.

Every reader returns a `Volume`: an array in (X, Y, Z[, C]) order (nibabel's), a RAS affine, and the source object
whose header a mask must copy. Bad files raise MedsegError naming the file, never a half-read array: gzip streams
are read to the end first because some readers silently zero-fill a truncated `.nii.gz`.
"""

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import nibabel as nib
import numpy as np
import SimpleITK as sitk
import tifffile

from medseg.errors import MedsegError
from medseg.utils.files import atomic_write

NIFTI = (".nii", ".nii.gz")
ITK = (".nrrd", ".nhdr", ".mha", ".mhd")
TIFF = (".tif", ".tiff")
HDF5 = (".h5", ".hdf5", ".hdf")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Volume:
    array: np.ndarray  # (X, Y, Z) or (X, Y, Z, C)
    affine: np.ndarray  # 4x4 voxel -> RAS world (EM: voxel size in nm on the diagonal)
    source: Any  # nib image, sitk image, or None for EM stacks
    path: Path


def suffix(path: str | Path) -> str:
    name = str(path).lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def stem(path: str | Path) -> str:
    """The file name without its image extension (`case_flair.nii.gz` -> `case_flair`)."""
    path = Path(path)
    return path.name[: -len(suffix(path))] if suffix(path) else path.name


def is_image(path: str | Path) -> bool:
    return suffix(path) in NIFTI + ITK + TIFF + HDF5


def check_gzip(path: Path) -> None:
    """Decompress the whole stream so a truncated or corrupted file fails here (CRC and length are checked)."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    except (OSError, EOFError, zlib.error) as e:
        raise MedsegError(f"{path}: corrupt or truncated gzip data ({e})") from None


def read_volume(path: str | Path, voxel_size: tuple[float, float, float] | None = None) -> Volume:
    """Read a NIfTI, NRRD/MHA (SimpleITK), TIFF stack or HDF5 volume and check it is a usable 3D image.

    voxel_size: (z, y, x) in nm for EM stacks (TIFF/HDF5), which carry no geometry of their own.
    """
    path = Path(path)
    if not path.exists():
        raise MedsegError(f"{path}: no such file or directory")
    if path.is_dir():
        raise MedsegError(f"{path}: is a directory, expected an image file")
    ext = suffix(path)
    if ext in NIFTI:
        volume = _read_nifti(path)
    elif ext in ITK:
        volume = _read_itk(path)
    elif ext in TIFF + HDF5:
        volume = _read_em(path, voxel_size)
    else:
        raise MedsegError(f"{path}: unsupported file type {ext or '(none)'}; expected NIfTI, NRRD, MHA, TIFF or HDF5")
    _check_array(volume.array, path)
    return volume


def _read_nifti(path: Path) -> Volume:
    if path.name.lower().endswith(".gz"):
        check_gzip(path)
    try:
        img = nib.load(path)
        array = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel raises many types for non-NIfTI content
        raise MedsegError(f"{path}: not a readable NIfTI image ({type(e).__name__}: {e})") from None
    return Volume(array, img.affine.astype(np.float64), img, path)


def _read_itk(path: Path) -> Volume:
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise MedsegError(f"{path}: not a readable image ({str(e).strip().splitlines()[-1]})") from None
    array = sitk.GetArrayFromImage(img)  # (Z, Y, X[, C])
    if img.GetDimension() != 3:
        raise MedsegError(f"{path}: expected a 3D image, got {img.GetDimension()}D")
    array = np.moveaxis(array, [0, 1, 2], [2, 1, 0])  # -> (X, Y, Z[, C])
    return Volume(array, itk_affine(img), img, path)


def itk_affine(img: sitk.Image) -> np.ndarray:
    """ITK (LPS) spacing/direction/origin as a nibabel-style RAS voxel-to-world affine."""
    direction = np.array(img.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.array(img.GetSpacing())
    affine[:3, 3] = img.GetOrigin()
    return LPS_TO_RAS @ affine


def _read_em(path: Path, voxel_size: tuple[float, float, float] | None) -> Volume:
    try:
        if suffix(path) in TIFF:
            array = tifffile.imread(path)
        else:
            array = _read_h5(path)
    except MedsegError:
        raise
    except Exception as e:
        raise MedsegError(f"{path}: not a readable EM volume ({type(e).__name__}: {e})") from None
    if array.ndim != 3:
        raise MedsegError(f"{path}: expected a 3D (z, y, x) stack, got shape {array.shape}")
    array = array.transpose(2, 1, 0)  # (Z, Y, X) -> (X, Y, Z)
    zyx = voxel_size or (1.0, 1.0, 1.0)
    return Volume(array, np.diag([zyx[2], zyx[1], zyx[0], 1.0]), None, path)


def _read_h5(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return the_dataset(f, path)[()]


def the_dataset(f: h5py.File, path: Path) -> h5py.Dataset:
    """The volume is the file's one dataset (EM stacks are stored one per file, as in PyTorch Connectomics)."""
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    if len(names) != 1:
        raise MedsegError(f"{path}: expected exactly one dataset, found {names or 'none'}")
    return f[names[0]]


def _check_array(array: np.ndarray, path: Path) -> None:
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise MedsegError(f"{path}: voxel type {array.dtype} is not a real number type")
    spatial = array.shape[:3]
    if array.ndim < 3 or min(spatial) < 2:
        raise MedsegError(f"{path}: expected a 3D volume, got shape {array.shape} (a 2D image?)")
    if array.ndim > 4:
        raise MedsegError(f"{path}: expected a 3D volume (or 4D with channels last), got shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise MedsegError(f"{path}: contains NaN or infinite values")


def zyx(array: np.ndarray) -> np.ndarray:
    """(X, Y, Z[, C]) -> (Z, Y, X[, C]): EM stacks are stored z first."""
    return np.ascontiguousarray(np.swapaxes(array, 0, 2))


def write_h5(path: Path, array: np.ndarray, voxel_size: np.ndarray) -> None:
    """One gzip-compressed dataset `main` (PyTorch Connectomics' name), its (z, y, x) voxel size in nm as an
    attribute (`resolution`, as CREMI files)."""
    with h5py.File(path, "w") as f:
        f.create_dataset("main", data=array, compression="gzip", chunks=True)
        f["main"].attrs["resolution"] = voxel_size


def write_mask(mask: np.ndarray, reference: Volume, out: Path) -> None:
    """Write a (X, Y, Z[, R]) array (uint8 mask, uint32 neuron ids, float probabilities) on the reference's grid
    with its header copied (sform, qform, codes, units); EM stacks as TIFF, HDF5 or NIfTI (in micrometres)."""
    out_ext = suffix(out)
    if isinstance(reference.source, nib.spatialimages.SpatialImage) and out_ext in NIFTI:
        header = reference.source.header.copy()
        header.set_data_dtype(mask.dtype)
        img = type(reference.source)(mask, None, header=header)  # affine=None keeps both xforms and their codes
        img.header["cal_min"], img.header["cal_max"] = 0, 0
        img.header.set_slope_inter(None, None)
        atomic_write(out, lambda p: nib.save(img, p))
    elif isinstance(reference.source, sitk.Image) and out_ext in ITK:
        img = sitk.GetImageFromArray(np.ascontiguousarray(mask.transpose(2, 1, 0)))
        img.CopyInformation(reference.source)
        atomic_write(out, lambda p: sitk.WriteImage(img, str(p), True))
    elif reference.source is None and out_ext in TIFF:
        atomic_write(out, lambda p: tifffile.imwrite(p, zyx(mask), compression="zlib"))
    elif reference.source is None and out_ext in HDF5:
        atomic_write(out, lambda p: write_h5(p, zyx(mask), np.diag(reference.affine)[2::-1]))
    elif out_ext in NIFTI:  # an ITK or EM input written as NIfTI: both xforms from its affine, code 1
        em = reference.source is None
        affine = np.diag([*(np.diag(reference.affine)[:3] / 1000.0), 1.0]) if em else reference.affine  # nm -> um
        img = nib.Nifti1Image(mask, affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        img.header.set_xyzt_units("micron" if em else "mm")
        atomic_write(out, lambda p: nib.save(img, p))
    else:
        raise MedsegError(f"{out}: cannot write a mask for a {suffix(reference.path)} input as {out_ext or '(none)'}")
