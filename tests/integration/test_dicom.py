"""DICOM in, DICOM-SEG out, on the bundled held-out sample written as MR Image Storage series (tests/dicom_series.py):
the mask predicted from DICOM equals, in world space, the one predicted from the NIfTI files; the SEG read back with
highdicom lands on the same voxels; pydicom's own test files and broken cases end in one `error:` line."""

import zipfile
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.processing import resample_from_to
from pydicom.fileset import FileSet
from pydicom.uid import generate_uid

from medseg.cli import main
from medseg.data.io import LPS_TO_RAS
from medseg.resources import sample as sample_dir
from tests.dicom_series import write_case, write_series, write_series_sitk

CROP = (slice(4, 44), slice(16, 72), slice(12, 54))  # the lesion and some brain: one 64^3 window of the brats model


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict:
    """The held-out case cropped (FLAIR, T1ce as NIfTI) and its mask predicted from the NIfTI files."""
    src = sample_dir() / "heldout" / "brats_2013_pat0001_1"
    root = tmp_path_factory.mktemp("sample")
    case = root / "nifti"
    case.mkdir()
    images = {}
    for m in ("flair", "t1ce"):
        images[m] = nib.load(src / f"brats_2013_pat0001_1_{m}.nii.gz").slicer[CROP]
        nib.save(images[m], case / f"c_{m}.nii.gz")
    assert main(["predict", str(case), "--output", str(root / "nifti.nii.gz")]) == 0
    return {"root": root, "mask": nib.load(root / "nifti.nii.gz"), **images}


def canonical(img: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
    img = nib.as_closest_canonical(img)
    return np.asarray(img.dataobj), img.affine


@pytest.mark.parametrize("variant", [
    {},
    {"shuffle": True, "zip": True},
    {"shuffle": True, "preamble": False},
    {"dicomdir": True},
    {"reverse": True, "negate_columns": True, "slope": 0.5, "intercept": -3.0},
], ids=["standard", "shuffled-no-suffix-zipped", "no-preamble", "dicomdir", "reversed-negated-columns-rescaled"])
def test_dicom_case_gives_the_nifti_mask_in_world_space(sample, tmp_path, variant, capsys):
    variant = dict(variant)
    zipped, dicomdir = variant.pop("zip", False), variant.pop("dicomdir", False)
    case = write_case(sample["flair"], sample["t1ce"], tmp_path / "case", zip_to=tmp_path / "case.zip" if zipped
                      else None, **variant)
    if dicomdir:  # a DICOM file-set (PT000000/ST000000/SE000000/IM…) indexed by a DICOMDIR
        files = FileSet()
        for f in sorted(case.rglob("*")):
            if f.is_file():
                files.add(str(f))
        files.write(tmp_path / "fileset")
        case = tmp_path / "fileset" / "DICOMDIR"
    out = tmp_path / "d.nii.gz"
    assert main(["predict", str(case), "--output", str(out)]) == 0
    assert 'flair=series 3 "AX T2 FLAIR" (SeriesDescription), t1ce=series 4 "AX T1 POST GD"' in capsys.readouterr().out
    got, want = canonical(nib.load(out)), canonical(sample["mask"])
    np.testing.assert_allclose(got[1], want[1], atol=1e-3)
    np.testing.assert_array_equal(got[0], want[0])
    assert np.isin(got[0], [1, 2, 4]).sum() > 100  # the comparison is not between two empty masks
    if not variant and not dicomdir:  # the same voxel order: the same grid, both xforms with code 1
        written = nib.load(out)
        np.testing.assert_allclose(written.affine, sample["flair"].affine, atol=1e-4)
        assert written.header["sform_code"] == written.header["qform_code"] == 1


def test_dicom_seg_lands_on_the_nifti_mask(sample, tmp_path):
    case = write_case(sample["flair"], sample["t1ce"], tmp_path / "case", shuffle=True, preamble=False)
    out = tmp_path / "seg.dcm"
    assert main(["predict", str(case), "--output", str(out)]) == 0
    seg = hd.seg.segread(out)
    flair = [pydicom.dcmread(f, stop_before_pixels=True, force=True) for f in sorted(case.iterdir())]
    flair = [ds for ds in flair if ds.SeriesDescription == "AX T2 FLAIR"]
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.SegmentationType == "BINARY"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == flair[0].SeriesInstanceUID
    assert seg.StudyInstanceUID == flair[0].StudyInstanceUID and seg.PatientID == flair[0].PatientID
    assert seg.FrameOfReferenceUID == flair[0].FrameOfReferenceUID
    assert seg.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian  # uncompressed
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels == ["whole tumour", "tumour core", "enhancing tumour"]
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"AUTOMATIC"}
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    folder = tmp_path / "results"
    assert main(["predict", str(case), "--output-type", "dicom-seg", "--output", str(folder)]) == 0
    assert hd.seg.segread(folder / "case.dcm").SegmentSequence[2].SegmentLabel == "enhancing tumour"
    mask = sample["mask"]
    truth = np.asarray(mask.dataobj)
    for number, values in zip((1, 2, 3), ([1, 2, 3, 4], [1, 3, 4], [4]), strict=True):
        volume = seg.get_volume(segment_numbers=[number], combine_segments=True)
        img = nib.Nifti1Image(volume.array.astype(np.uint8), LPS_TO_RAS @ volume.affine)
        on_mask = np.asarray(resample_from_to(img, (mask.shape, mask.affine), order=0).dataobj)
        np.testing.assert_array_equal(on_mask > 0, np.isin(truth, values))


def test_series_written_by_simpleitk(sample, tmp_path):
    """Another writer's series (SimpleITK's GDCM writer: no SliceThickness, int16): the NIfTI mask and the SEG."""
    study, frame = generate_uid(), generate_uid()
    case = tmp_path / "case"
    for number, (m, description) in enumerate([("flair", "AX T2 FLAIR"), ("t1ce", "AX T1 POST GD")]):
        write_series_sitk(sample[m], case / m, description, study=study, frame=frame, number=number + 2)
    assert main(["predict", str(case), "--output", str(tmp_path / "d.nii.gz")]) == 0
    got, want = canonical(nib.load(tmp_path / "d.nii.gz")), canonical(sample["mask"])
    np.testing.assert_allclose(got[1], want[1], atol=1e-3)
    np.testing.assert_array_equal(got[0], want[0])
    assert main(["predict", str(case), "--output", str(tmp_path / "seg.dcm")]) == 0
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["whole tumour", "tumour core", "enhancing tumour"]


def test_channels_on_other_grids_of_one_frame_are_resampled(sample, tmp_path):
    """T1ce on a larger grid shifted by whole voxels: resampled onto FLAIR's grid it is the same data."""
    src = sample_dir() / "heldout" / "brats_2013_pat0001_1"
    bigger = nib.load(src / "brats_2013_pat0001_1_t1ce.nii.gz").slicer[2:50, 10:80, 8:60]
    case = write_case(sample["flair"], bigger, tmp_path / "case")
    out = tmp_path / "d.nii.gz"
    assert main(["predict", str(case), "--output", str(out)]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), np.asarray(sample["mask"].dataobj))


def test_series_folders_with_channels(sample, tmp_path, capsys):
    """Two series folders named by --channels, their descriptions saying nothing."""
    case = write_case(sample["flair"], sample["t1ce"], tmp_path / "case", descriptions=("SERIES A", "SERIES B"))
    out = tmp_path / "d.nii.gz"
    assert main(["predict", str(case / "1"), str(case / "2"), "--channels", "flair,t1ce", "--output", str(out)]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), np.asarray(sample["mask"].dataobj))
    assert main(["predict", str(case), "--output", str(tmp_path / "e.nii.gz")]) == 2
    assert 'no series for flair, t1ce among series 3 "SERIES A", series 4 "SERIES B"' in capsys.readouterr().err


def run_error(capsys, *args: str) -> str:
    assert main(["predict", *args]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "Traceback" not in captured.err
    return lines[-1]


def test_pydicom_test_files_are_refused(tmp_path, capsys):
    data = pytest.importorskip("pydicom.data")
    try:
        small = Path(data.get_testdata_file("MR_small.dcm"))
        mr700 = Path(data.get_testdata_file("dicomdirtests/98892003/MR700/4467")).parent
        mr2 = Path(data.get_testdata_file("dicomdirtests/98892003/MR2/4950")).parent
    except (TypeError, ValueError, OSError):
        pytest.skip("pydicom's test files are not in this installation")
    out = tmp_path / "m.nii.gz"
    assert "a single 2D image, not a 3D volume" in run_error(capsys, str(small), "--output", str(out))
    assert "images have different orientations" in run_error(capsys, str(mr700), "--output", str(out))
    message = run_error(capsys, str(mr2), "--output", str(out))
    assert "only localizer" in message and "FAST LOCALIZER" in message and "RF FAST PILOT" in message
    assert not out.exists()


def test_broken_dicom_cases_are_refused(sample, tmp_path, capsys):
    flair, t1ce = sample["flair"], sample["t1ce"]
    other = write_case(flair, t1ce, tmp_path / "other", frames=(generate_uid(), generate_uid()))
    assert "not co-registered" in run_error(capsys, str(other))
    two = write_case(flair, t1ce, tmp_path / "two")
    write_series(flair, two / "3", "SAG FLAIR", study="1.2", frame="1.3", number=9)
    assert "several series for flair" in run_error(capsys, str(two))
    gap = write_case(flair, t1ce, tmp_path / "gap")
    sorted((gap / "1").iterdir())[5].unlink()  # a slice inside the FLAIR series is missing
    assert "uneven slice spacing" in run_error(capsys, str(gap))
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as z:
        z.writestr("readme.txt", "no DICOM here")
    assert "no DICOM image series" in run_error(capsys, str(tmp_path / "bad.zip"))


def test_dicom_seg_needs_a_dicom_input(sample, tmp_path, capsys):
    out = tmp_path / "seg.dcm"
    assert "is not DICOM" in run_error(capsys, str(sample["root"] / "nifti"), "--output", str(out))
    assert not out.exists()
