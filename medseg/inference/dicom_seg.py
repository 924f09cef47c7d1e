"""DICOM-SEG out: a highdicom Segmentation (BINARY, uncompressed) of the reference series a DICOM case was read from.

One segment per region present in the mask (BraTS: whole tumour, tumour core, enhancing tumour, which overlap, as
BINARY segments may), coded in SNOMED CT with a CIELab display colour, AUTOMATIC with the model's name and medseg's
version as algorithm identification. Frame k of the segmentation is slice k of the reference series in the order
the volume was read (along the slice normal), so no flip or transpose is written by hand: the mask's (X, Y, Z) array
is the (column, row, slice) index of the source images. Patient and study come from the source images. A NIfTI or
other non-DICOM input has no source images to reference, so `.dcm` is refused for it (docs/dicom.md).
"""

from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

import medseg
from medseg.errors import MedsegError
from medseg.evaluation.metrics import prediction_regions
from medseg.labels import Convention
from medseg.utils.files import atomic_write

# region -> (label, RGB colour). SNOMED CT has no concept for BraTS' sub-regions: all are category 49755003
# "Morphologically abnormal structure", type 108369006 "Neoplasm" (as dcmqi's and TotalSegmentator's tumour
# segments), told apart by their label.
SEGMENTS = {"wt": ("whole tumour", (0, 200, 0)), "tc": ("tumour core", (255, 200, 0)),
            "et": ("enhancing tumour", (220, 30, 30))}
TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "StudyDate", "StudyTime",
         "AccessionNumber", "ReferringPhysicianName")  # Type 2 attributes highdicom copies: empty when absent


def segment_descriptions(regions: list[str], model: str) -> list[hd.seg.SegmentDescription]:
    """Numbered 1.. in the order given."""
    algorithm = hd.AlgorithmIdentificationSequence(name=f"medseg {model}", version=medseg.__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    out = []
    for number, region in enumerate(regions, start=1):
        label, rgb = SEGMENTS.get(region, (region, (128, 128, 255)))
        out.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*rgb)))
    return out


def write_seg(labels: np.ndarray, convention: Convention, headers: list, model: str, out: Path) -> list[str]:
    """Write the (X, Y, Z) label map on the reference series' grid as a DICOM-SEG; returns the regions written."""
    regions = {r: m for r, m in prediction_regions(labels, convention).items() if m.any()}
    if not regions:
        raise MedsegError(f"{out}: the mask is empty; a DICOM-SEG needs at least one segment (write .nii.gz)")
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in headers])
    step = float(np.linalg.norm(positions[1] - positions[0]))  # the slices are sorted and evenly spaced
    sources = []
    for ds in headers:
        ds = ds.copy()  # the source files are never touched
        for keyword in TYPE2:
            if keyword not in ds:
                setattr(ds, keyword, "")
        if "SliceThickness" not in ds:  # Type 2 in MR, but SimpleITK-written series lack it; highdicom needs it
            ds.SliceThickness = step
        sources.append(ds)
    frames = np.stack([np.moveaxis(m, [0, 1, 2], [2, 1, 0]) for m in regions.values()], axis=-1)  # (Z, Y, X, S)
    try:
        seg = _segmentation(sources, frames, list(regions), model)
    except (AttributeError, ValueError, TypeError) as e:
        raise MedsegError(f"{out}: highdicom cannot build a DICOM-SEG on these source images ({e})") from None
    atomic_write(out, lambda p: seg.save_as(p))
    return list(regions)


def _segmentation(sources: list, frames: np.ndarray, regions: list[str], model: str) -> hd.seg.Segmentation:
    """BINARY (the type every viewer reads), uncompressed (highdicom's default transfer syntax)."""
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=frames.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(regions, model),
        series_instance_uid=generate_uid(), series_number=int(sources[0].get("SeriesNumber") or 0) + 1000,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="medseg",
        manufacturer_model_name=model, software_versions=medseg.__version__, device_serial_number="none",
        series_description=f"medseg {model} segmentation")

