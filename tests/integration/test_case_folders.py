"""Case folders as users have them (issue 24): extra files in a case folder, `--output` naming a file, MSD 4D files
named by dataset.json."""

import json

import nibabel as nib
import numpy as np

from medseg.cli import main
from tests.conftest import write_case


def test_case_folder_with_a_coverage_file_writes_one_mask_file(tmp_path, capsys):
    """The issue's report: BRATS_119 + BRATS_119_coverage became two cases and a folder named m.nii.gz."""
    case = write_case(tmp_path, "BRATS_119", seed=2)
    flair = nib.load(case / "BRATS_119_flair.nii.gz")
    nib.save(nib.Nifti1Image(np.ones(flair.shape, np.uint8), flair.affine), case / "BRATS_119_coverage.nii.gz")
    out = tmp_path / "m.nii.gz"
    assert main(["predict", str(case), "--output", str(out)]) == 0
    assert out.is_file() and nib.load(out).shape == flair.shape
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "BRATS_119_coverage.nii.gz" in notes[0] and "BRATS_119_seg.nii.gz" in notes[0]
    assert main(["predict", str(case), "--output", str(out), "--overwrite"]) == 0  # a second run: the same file


def test_output_file_with_several_cases_stops_before_predicting(tmp_path, capsys):
    cases = tmp_path / "in"
    for i in range(2):
        write_case(cases, f"case{i}", seed=i, with_label=False)
    for name in ("m.nii.gz", "m.nrrd", "seg.dcm"):
        assert main(["predict", str(cases), "--output", str(tmp_path / name)]) == 2
        assert "names one file, but" in capsys.readouterr().err
        assert not (tmp_path / name).exists()
    loose = tmp_path / "loose"  # two complete groups of loose files are a folder of cases too
    for i in range(2):
        for f in (cases / f"case{i}").iterdir():
            loose.mkdir(exist_ok=True)
            f.rename(loose / f.name)
    assert main(["predict", str(loose), "--output", str(tmp_path / "m.nii.gz")]) == 2
    assert not (tmp_path / "m.nii.gz").exists()


def test_a_folder_named_like_a_mask_is_not_written_into(tmp_path, capsys):
    case = write_case(tmp_path, "c", seed=3, with_label=False)
    (tmp_path / "m.nii.gz").mkdir()  # left by an older medseg
    assert main(["predict", str(case), "--output", str(tmp_path / "m.nii.gz")]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert list((tmp_path / "m.nii.gz").iterdir()) == []


def test_msd_4d_file_takes_its_channels_from_dataset_json(tmp_path, capsys):
    task = tmp_path / "Task01_BrainTumour"
    case = write_case(tmp_path, "x", seed=4, with_label=False)
    flair, t1ce = (nib.load(case / f"x_{m}.nii.gz") for m in ("flair", "t1ce"))
    zero = np.zeros(flair.shape, np.float32)
    stacked = np.stack([np.asarray(flair.dataobj), zero, np.asarray(t1ce.dataobj), zero], axis=-1)
    (task / "imagesTs").mkdir(parents=True)
    nib.save(nib.Nifti1Image(stacked, flair.affine), task / "imagesTs" / "BRATS_485.nii.gz")
    (task / "dataset.json").write_text(json.dumps({"modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}}))
    out4d, out3d = tmp_path / "4d.nii.gz", tmp_path / "3d.nii.gz"
    assert main(["predict", str(task / "imagesTs" / "BRATS_485.nii.gz"), "--output", str(out4d)]) == 0
    assert "flair=BRATS_485.nii.gz[0], t1ce=BRATS_485.nii.gz[2]" in capsys.readouterr().out
    assert main(["predict", str(case), "--output", str(out3d)]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(out4d).dataobj), np.asarray(nib.load(out3d).dataobj))
