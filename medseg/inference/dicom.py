"""DICOM MR series in: files grouped by SeriesInstanceUID, each series identified as a modality, read as a volume.

Inputs: a series folder, a case folder whose sub-folders or files form several series (any depth, any file names,
suffix or not), a `.zip` of either, a DICOMDIR (its folder is read), or several series folders. Files are grouped by
SeriesInstanceUID, never by folder or name. Each series' modality comes from its SeriesDescription (else its
ProtocolName) by the rules of `series_modalities`, or from `--channels` (series in the order the inputs were given,
then by SeriesNumber). Volumes are read by SimpleITK's GDCM reader (rescale slope/intercept applied) from the files
sorted along the slice normal, as GDCM sorts them; ITK's LPS geometry becomes a RAS affine by `itk_affine`. Channels
on other grids of the same frame of reference are resampled onto the first channel's grid in world coordinates.
Refused with one line: a single 2D image, a series whose images differ in orientation, pixel spacing or size or are
not evenly stacked, localizers only, several series for one modality, series of other frames of reference
("not co-registered"). Medseg neither registers series nor strips the skull (docs/dicom.md).
"""

import re
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from medseg.data.io import Volume, is_image, itk_affine
from medseg.errors import MedsegError

NOT_IMAGES = {"SEG", "RTSTRUCT", "SR", "PR", "KO", "REG", "RTPLAN", "RTDOSE", "DOC"}  # Modality of non-image objects
LOCALIZER = re.compile(r"localizer|localiser|scout|survey|pilot|3 ?plane loc|tri ?pilot")
FLAIR = re.compile(r"flair|\bt2f\b|dark ?fluid|\btirm\b")
T1 = re.compile(r"\bt1(w|n|ce|c|gd|wce|post|km)?\b|mprage|mp ?rage|\bspgr\b|\bbravo\b|\bvibe\b|\bt1 ?weighted")
CONTRAST = re.compile(r"\bpost|\bgd\b|\bgad|gado|contrast|\+ ?c\b|\bc ?\+|\bce\b|\bkm\b|\bt1(c|ce|gd|wce|post)\b|"
                      r"\+ ?gd|enhanced")
NATIVE = re.compile(r"\bpre\b|precontrast|pre ?contrast|\bnative\b|without|non ?contrast|\bno ?(gd|contrast)\b")
T2 = re.compile(r"\bt2w?\b|\bt2 ?weighted")


def series_modalities(text: str) -> set[str]:
    """What a SeriesDescription / ProtocolName says: FLAIR first (so "AX T2 FLAIR" is flair, not t2); a T1 word
    (T1, T1W, MPRAGE, SPGR, BRAVO, VIBE) with a contrast word (POST, GD, GAD, +C, CE, KM, CONTRAST) and no
    PRE/NATIVE word is t1ce, without one t1; T2/T2W is t2. Several answers (e.g. "T1 FLAIR") are ambiguous."""
    t = " ".join(re.split(r"[^a-z0-9+]+", text.lower()))
    found = {"flair"} if FLAIR.search(t) else set()
    if T1.search(t):
        found.add("t1ce" if CONTRAST.search(t) and not NATIVE.search(t) else "t1")
    if T2.search(t) and "flair" not in found:
        found.add("t2")
    return found


@dataclass
class Series:
    """One SeriesInstanceUID: its headers sorted along the slice normal, and why it is not one 3D volume."""

    uid: str
    files: list[Path]
    headers: list[pydicom.Dataset]
    order: int  # the input it came from, for --channels
    problem: str | None = None

    def get(self, keyword: str, default=None):
        return self.headers[0].get(keyword, default)

    @property
    def name(self) -> str:
        text = self.get("SeriesDescription") or self.get("ProtocolName") or "no description"
        return f'series {self.get("SeriesNumber", "?")} "{str(text).strip()}"'

    @property
    def localizer(self) -> bool:
        words = " ".join(map(str, self.get("ImageType", []))) + " " + str(self.get("SeriesDescription", ""))
        return bool(LOCALIZER.search(words.lower()))


def is_dicom(paths: Sequence[Path]) -> bool:
    """A zip, a DICOMDIR, a DICOM file, or a folder holding no image files (NIfTI, NRRD…) but DICOM files."""
    for p in paths:
        if p.is_file() and (p.suffix.lower() == ".zip" or p.name.upper() == "DICOMDIR" or _looks_dicom(p)):
            return True
        if p.is_dir():
            files = [f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")]
            if not any(is_image(f) for f in files) and any(_looks_dicom(f) for f in files[:50]):
                return True
    return False


def _looks_dicom(path: Path) -> bool:
    """The 'DICM' preamble, or a file starting with a group 0002 or 0008 element (pydicom 3's `save_as` of a new
    Dataset writes no preamble; GDCM reads such files)."""
    with open(path, "rb") as f:
        head = f.read(132)
    return head[128:] == b"DICM" or head[:2] in (b"\x02\x00", b"\x08\x00")


@dataclass
class DicomCase:
    """What predict needs of a DICOM case: one volume per model modality on the reference (first) series' grid,
    the series chosen, and a line saying how they were chosen."""

    volumes: list[Volume]
    series: list[Series]
    matched: str


def read_case(paths: Sequence[Path], modalities: Sequence[str], channels: Sequence[str] | None) -> DicomCase:
    """The model's channels from DICOM inputs (see the module docstring for the rules and refusals)."""
    where = paths[0]
    with tempfile.TemporaryDirectory(prefix="medseg-dicom-") as tmp:
        series = _find_series(paths, Path(tmp))
        if not series:
            raise MedsegError(f"{where}: no DICOM image series found")
        volumes = [s for s in series if not s.localizer and s.problem is None]
        if not volumes:
            if all(s.localizer for s in series):
                raise MedsegError(f"{where}: only localizer (scout) images: {_names(series)}")
            bad = [s for s in series if not s.localizer]
            raise MedsegError(f"{where}: no 3D volume: " + "; ".join(f"{s.name}: {s.problem}" for s in bad[:3]))
        picked, how = _pick(series, modalities, channels, where)
        for s in picked:
            if s.problem:
                raise MedsegError(f"{where}: {s.name}: {s.problem}")
        frames = {s.get("FrameOfReferenceUID") for s in picked}
        if len(frames) > 1:
            raise MedsegError(f"{where}: {' and '.join(s.name for s in picked)} have different FrameOfReferenceUIDs: "
                              "not co-registered; register them first (medseg does not register series)")
        images = [_read_volume(s, where) for s in picked]
    reference = images[0]
    out = []
    for s, image in zip(picked, images, strict=True):
        if not _same_grid(image, reference):
            print(f"note: {s.name} resampled onto the grid of {picked[0].name} (same frame of reference)",
                  file=sys.stderr)
            image = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        array = np.moveaxis(sitk.GetArrayFromImage(image), [0, 1, 2], [2, 1, 0])  # (Z, Y, X) -> (X, Y, Z)
        out.append(Volume(array, itk_affine(image), image, where))
    return DicomCase(out, picked, how)


def _find_series(paths: Sequence[Path], tmp: Path) -> list[Series]:
    """Every image series under the inputs, zips unpacked into `tmp`; non-DICOM files are passed over."""
    groups: dict[str, tuple[int, list[tuple[Path, pydicom.Dataset]]]] = {}
    for order, p in enumerate(paths):
        if p.is_file() and p.suffix.lower() == ".zip":
            target = tmp / str(order)
            try:
                with zipfile.ZipFile(p) as z:
                    z.extractall(target)  # member names are sanitised: nothing lands outside `target`
            except (zipfile.BadZipFile, OSError) as e:
                raise MedsegError(f"{p}: not a readable zip file ({e})") from None
            p = target
        elif p.is_file() and p.name.upper() == "DICOMDIR":
            p = p.parent  # the files a DICOMDIR indexes lie in its folder tree
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if not f.is_file() or f.name.upper() == "DICOMDIR" or not _looks_dicom(f):
                continue
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
                ds.get("Modality")  # elements are parsed lazily: a bad file fails here or above
            except Exception:  # noqa: BLE001 - any file pydicom cannot parse is not part of a series
                continue
            if "SeriesInstanceUID" in ds and "Rows" in ds and ds.get("Modality") not in NOT_IMAGES:
                groups.setdefault(ds.SeriesInstanceUID, (order, []))[1].append((f, ds))
    series = [_sorted_series(uid, order, items) for uid, (order, items) in groups.items()]
    return sorted(series, key=lambda s: (s.order, int(s.get("SeriesNumber") or 0), s.name, s.uid))


def _sorted_series(uid: str, order: int, items: list[tuple[Path, pydicom.Dataset]]) -> Series:
    """A series with its slices sorted along the normal of their orientation, and its geometry checked."""
    headers = [ds for _, ds in items]
    series = Series(uid, [f for f, _ in items], headers, order)
    first = headers[0]
    if int(first.get("NumberOfFrames") or 1) > 1:
        series.problem = "a multi-frame (enhanced) image: convert it with dcm2niix first"
        return series
    if len(headers) == 1:
        series.problem = "a single 2D image, not a 3D volume"
        return series
    try:
        orient = np.array([[float(v) for v in ds.ImageOrientationPatient] for ds in headers])
        spacing = np.array([[float(v) for v in ds.PixelSpacing] for ds in headers])
        position = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in headers])
    except (AttributeError, TypeError, ValueError):
        series.problem = "no image position, orientation or pixel spacing in some of its files"
        return series
    if np.abs(orient - orient[0]).max() > 1e-4:
        series.problem = "not one 3D volume: its images have different orientations"
    elif np.abs(spacing - spacing[0]).max() > 1e-4 or len({(ds.Rows, ds.Columns) for ds in headers}) > 1:
        series.problem = "not one 3D volume: its images have different pixel spacings or sizes"
    if series.problem:
        return series
    normal = np.cross(orient[0, :3], orient[0, 3:])
    along = position @ normal
    order_ = np.argsort(along, kind="stable")
    series.files = [series.files[i] for i in order_]
    series.headers = [headers[i] for i in order_]
    steps = np.diff(along[order_])
    drift = position[order_] - position[order_][0] - np.outer(along[order_] - along[order_][0], normal)
    if steps.min() < 1e-3:
        series.problem = "several images at one slice position (several volumes, echoes or time points)"
    elif np.abs(steps - steps.mean()).max() > 0.01 * steps.mean() + 1e-3:
        series.problem = "not one 3D volume: uneven slice spacing (missing slices?)"
    elif np.abs(drift).max() > 1e-2 * steps.mean() + 1e-3:
        series.problem = "slices are not stacked along their normal (gantry tilt): not supported"
    return series


def _pick(series: list[Series], modalities: Sequence[str], channels: Sequence[str] | None,
          where: Path) -> tuple[list[Series], str]:
    """The series of each model modality, in model order, and a line saying what matched."""
    candidates = [s for s in series if not s.localizer]
    if channels is not None:
        if len(channels) != len(candidates):
            raise MedsegError(f"{where}: --channels names {len(channels)} series but there are {len(candidates)}: "
                              f"{_names(candidates)}")
        named = dict(zip(channels, candidates, strict=True))
        missing = [m for m in modalities if m not in named]
        if missing:
            raise MedsegError(f"{where}: --channels names no series for {', '.join(missing)}")
        picked = [named[m] for m in modalities]
        return picked, ", ".join(f"{m}={s.name} (--channels)" for m, s in zip(modalities, picked, strict=True))
    claims: dict[str, list[Series]] = {m: [] for m in modalities}
    said: dict[str, str] = {}
    for s in candidates:
        field = next((k for k in ("SeriesDescription", "ProtocolName") if series_modalities(str(s.get(k, "")))), None)
        found = series_modalities(str(s.get(field, ""))) if field else set()
        if len(found) > 1 and found & set(modalities):
            raise MedsegError(f"{where}: {s.name} is ambiguous (its {field} names {', '.join(sorted(found))}); "
                              "give --channels")
        for m in found & set(modalities):
            claims[m].append(s)
            said[s.uid] = field or ""
    for m, found in claims.items():
        if len(found) > 1:
            raise MedsegError(f"{where}: several series for {m}: {_names(found)}; give one series folder per "
                              "channel or --channels")
    missing = [m for m, found in claims.items() if not found]
    if missing:
        raise MedsegError(f"{where}: no series for {', '.join(missing)} among {_names(candidates)}; name each "
                          f"series' modality in order with --channels (e.g. --channels {','.join(modalities)})")
    picked = [claims[m][0] for m in modalities]
    ignored = [s for s in series if s not in picked]
    if ignored:
        print(f"note: series not used by this model, ignored: {_names(ignored)}", file=sys.stderr)
    return picked, ", ".join(f"{m}={s.name} ({said[s.uid]})" for m, s in zip(modalities, picked, strict=True))


def _names(series: Sequence[Series]) -> str:
    return ", ".join(s.name for s in series) or "none"


def _read_volume(series: Series, where: Path) -> sitk.Image:
    """The series as a 3D image by SimpleITK's GDCM reader, from the files in slice order."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in series.files])
    try:
        image = reader.Execute()
    except RuntimeError as e:
        raise MedsegError(f"{where}: {series.name}: not readable ({str(e).strip().splitlines()[-1]})") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise MedsegError(f"{where}: {series.name}: not a 3D grey-value volume")
    first = [float(v) for v in series.headers[0].ImagePositionPatient]
    if not np.allclose(image.GetOrigin(), first, atol=1e-3):  # slice k of the volume must be file k (DICOM-SEG)
        raise MedsegError(f"{where}: {series.name}: the reader put the first slice at {image.GetOrigin()}, not at "
                          f"{first}; not supported")
    return image


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-4)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-4))
