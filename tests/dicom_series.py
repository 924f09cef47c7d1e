"""Test helper: a NIfTI volume written as an MR Image Storage series with pydicom (one file per slice), in the
variants DICOM input must survive: shuffled file names without a suffix, slices numbered in reverse, a negated
column direction (TotalSegmentator PR #598's case), rescale slope/intercept, a zip."""

import locale
import random
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def write_series(img: nib.Nifti1Image, folder: Path, description: str, *, study: str, frame: str, number: int,
                 shuffle: bool = False, reverse: bool = False, negate_columns: bool = False,
                 slope: float = 1.0, intercept: float = 0.0, seed: int = 0, preamble: bool = True) -> list[Path]:
    """One file per slice k of the volume's third axis: column index = voxel i, row index = voxel j.
    Stored values are (value - intercept) / slope, so that the modality LUT gives the volume back. Without
    `preamble` the files are what pydicom 3's plain `save_as` writes from a new Dataset: file meta, no 'DICM'."""
    data, affine = np.asarray(img.dataobj, dtype=np.float64), LPS @ img.affine
    if negate_columns:  # flip j with the affine that keeps every voxel in place (nibabel's slicer misplaces ::-1)
        flip = np.eye(4)
        flip[1, 1], flip[1, 3] = -1, data.shape[1] - 1
        data, affine = data[:, ::-1, :], affine @ flip
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    rowdir, coldir = affine[:3, 0] / zooms[0], affine[:3, 1] / zooms[1]
    series = generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    n = data.shape[2]
    names = [f"IM{k:04d}.dcm" for k in range(n)]
    if shuffle:
        names = [f"{random.Random(seed + k).getrandbits(40):x}" for k in range(n)]
    written = []
    for k in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Glioma", "MEDSEG001", "", "O"
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime, ds.StudyID = study, "20260101", "120000", "1"
        ds.AccessionNumber, ds.ReferringPhysicianName = "", ""
        ds.Modality, ds.Manufacturer = "MR", "medseg-test"
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series, number, description
        ds.ProtocolName = description
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame, ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
        ds.InstanceNumber = n - k if reverse else k + 1
        ds.ImagePositionPatient = [float(v) for v in (affine @ [0, 0, k, 1])[:3]]
        ds.ImageOrientationPatient = [float(v) for v in (*rowdir, *coldir)]
        ds.PixelSpacing = [float(zooms[1]), float(zooms[0])]  # between rows, between columns
        ds.SliceThickness = float(zooms[2])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "US"
        stored = np.round((data[:, :, k].T - intercept) / slope).astype(np.int16)  # (rows, columns)
        ds.PixelData = stored.tobytes()
        path = folder / names[k]
        ds.save_as(path, enforce_file_format=preamble)
        written.append(path)
    return written


def write_case(flair: nib.Nifti1Image, t1ce: nib.Nifti1Image, folder: Path, *, zip_to: Path | None = None,
               frames: tuple[str, str] | None = None, descriptions=("AX T2 FLAIR", "AX T1 POST GD"),
               **variant) -> Path:
    """FLAIR and T1ce as two series of one study (one frame of reference unless `frames` says otherwise), in
    sub-folders 1/ and 2/ of `folder` (or all in one folder when names are shuffled); zipped if `zip_to`."""
    study, frame = generate_uid(), generate_uid()
    frames = frames or (frame, frame)
    flat = variant.get("shuffle", False)
    for i, (img, description) in enumerate(zip((flair, t1ce), descriptions, strict=True)):
        write_series(img, folder if flat else folder / str(i + 1), description, study=study, frame=frames[i],
                     number=i + 3, seed=100 * i, **variant)
    if zip_to is None:
        return folder
    with zipfile.ZipFile(zip_to, "w") as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(folder))
    return zip_to


def write_series_sitk(img: nib.Nifti1Image, folder: Path, description: str, *, study: str, frame: str,
                      number: int) -> None:
    """The same volume written by another writer: SimpleITK's GDCM writer, slice by slice, as SimpleITK's
    DicomSeriesFromArray example does (LPS, int16, random names without suffix, no SliceThickness)."""
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(img, folder.parent / f"{folder.name}.nii.gz")
    volume = sitk.Cast(sitk.DICOMOrient(sitk.ReadImage(str(folder.parent / f"{folder.name}.nii.gz")), "LPS"),
                       sitk.sitkInt16)
    (folder.parent / f"{folder.name}.nii.gz").unlink()
    d = volume.GetDirection()
    tags = {"0010|0010": "Hidden^Case", "0010|0020": "H1", "0020|000d": study, "0020|000e": generate_uid(),
            "0020|0052": frame, "0008|0060": "MR", "0008|103e": description, "0020|0011": str(number),
            "0008|0016": MRImageStorage, "0020|0037": "\\".join(map(str, (d[0], d[3], d[6], d[1], d[4], d[7])))}
    saved = locale.setlocale(locale.LC_ALL)  # GDCM's writer sets the C locale (ASCII): put the test run's back
    try:
        _write_slices(volume, tags, folder, number)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_slices(volume: sitk.Image, tags: dict[str, str], folder: Path, number: int) -> None:
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")
    rng = random.Random(number)
    for k in range(volume.GetDepth()):
        image = volume[:, :, k]
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        image.SetMetaData("0008|0018", generate_uid())
        image.SetMetaData("0020|0032", "\\".join(map(str, volume.TransformIndexToPhysicalPoint((0, 0, k)))))
        image.SetMetaData("0020|0013", str(k + 1))
        writer.SetFileName(str(folder / f"{rng.getrandbits(48):x}"))
        writer.Execute(image)
