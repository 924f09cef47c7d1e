"""Channel names as tools and scanners write them (file names, DICOM series descriptions, dataset.json), and which
folders are one case."""

import json
from pathlib import Path

import pytest

from medseg.inference.channels import dataset_channels, find_cases, modality_of
from medseg.inference.dicom import series_modalities

FOUR = ["flair", "t1", "t1ce", "t2"]


@pytest.mark.parametrize("name, modality", [
    # BraTS Toolkit / CaPTk
    ("TCGA-DU-7294_fla.nii.gz", "flair"), ("TCGA-DU-7294_t1.nii.gz", "t1"), ("TCGA-DU-7294_t1c.nii.gz", "t1ce"),
    ("TCGA-DU-7294_t2.nii.gz", "t2"), ("FL_to_SRI.nii.gz", "flair"), ("T1CE_to_SRI.nii.gz", "t1ce"),
    # BraTS 2023
    ("BraTS-GLI-00001-000-t2f.nii.gz", "flair"), ("BraTS-GLI-00001-000-t1n.nii.gz", "t1"),
    ("BraTS-GLI-00001-000-t1c.nii.gz", "t1ce"), ("BraTS-GLI-00001-000-t2w.nii.gz", "t2"),
    # BraTS 2021, DeepMedic
    ("BraTS2021_00006_t1ce.nii.gz", "t1ce"), ("BraTS2021_00006_t1.nii.gz", "t1"),
    ("Flair_subtrMeanDivStd.nii.gz", "flair"), ("T1c_subtrMeanDivStd.nii.gz", "t1ce"),
    # scanner words
    ("case_FLAIR.nii.gz", "flair"), ("case_T2_FLAIR.nii.gz", "flair"), ("case_T1Gd.nii.gz", "t1ce"),
    ("case_T1post.nii.gz", "t1ce"), ("case_T1_CE.nii.gz", "t1ce"), ("case T2.nii.gz", "t2"), ("case_T1w.nii", "t1"),
    # nothing
    ("case_coverage.nii.gz", None), ("case.nii.gz", None),
])
def test_tool_names(name, modality):
    assert modality_of(name, FOUR) == modality


def test_t1_never_takes_t1c():
    """A two-channel model: `_t1` is a modality it does not take, and does not swallow `_t1c`/`_t1ce`."""
    assert modality_of("x_t1.nii.gz", ["flair", "t1ce"]) == ""
    assert modality_of("x_t1c.nii.gz", ["flair", "t1"]) == ""
    assert modality_of("x_t1ce.nii.gz", ["flair", "t1ce"]) == "t1ce"


@pytest.mark.parametrize("text, modalities", [
    ("AX T2 FLAIR", {"flair"}), ("AX T1 POST GD", {"t1ce"}), ("Sag 3D FLAIR", {"flair"}), ("T2_FLAIR_tra", {"flair"}),
    ("t2_tirm_tra_dark-fluid", {"flair"}), ("T1 MPRAGE POST", {"t1ce"}), ("Ax T1+C", {"t1ce"}),
    ("t1_mprage_tra_KM", {"t1ce"}), ("T1CE", {"t1ce"}), ("T1Gd", {"t1ce"}), ("AX T1 PRE GD", {"t1"}),
    ("t1_mprage_sag_p2_iso", {"t1"}), ("AX T2", {"t2"}), ("T2W_TSE", {"t2"}), ("DWI b1000", set()),
    ("T1 FLAIR", {"flair", "t1"}),  # ambiguous: an error naming the series
])
def test_series_descriptions(text, modalities):
    assert series_modalities(text) == modalities


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).touch()


def test_a_case_folder_with_extra_files_is_one_case(tmp_path):
    touch(tmp_path / "BRATS_119", "BRATS_119_flair.nii.gz", "BRATS_119_t1ce.nii.gz", "BRATS_119_coverage.nii.gz",
          "BRATS_119_t2.nii.gz", "brain_mask.nii.gz", "notes.txt")
    cases, ignored, single = find_cases(tmp_path / "BRATS_119", ["flair", "t1ce"])
    assert single and list(cases) == ["BRATS_119"]
    assert [Path(f).name for f in cases["BRATS_119"]] == ["BRATS_119_flair.nii.gz", "BRATS_119_t1ce.nii.gz"]
    assert sorted(Path(f).name for f in ignored) == ["BRATS_119_coverage.nii.gz", "BRATS_119_t2.nii.gz",
                                                     "brain_mask.nii.gz"]


def test_two_files_for_one_modality_stay_in_the_case(tmp_path):
    """Both reach match_channels, which says 'a second file for flair'."""
    touch(tmp_path, "a_flair.nii.gz", "b_flair.nii.gz", "a_t1ce.nii.gz")
    cases, _, single = find_cases(tmp_path, ["flair", "t1ce"])
    assert single and len(next(iter(cases.values()))) == 3


def test_several_complete_groups_are_a_folder_of_cases(tmp_path):
    touch(tmp_path, "a_flair.nii.gz", "a_t1ce.nii.gz", "b_flair.nii.gz", "b_t1ce.nii.gz", "c_flair.nii.gz",
          "readme_coverage.nii.gz")
    cases, ignored, single = find_cases(tmp_path, ["flair", "t1ce"])
    assert not single and sorted(cases) == ["a", "b", "c"]  # c is a case that will fail: its t1ce is missing
    assert [Path(f).name for f in ignored] == ["readme_coverage.nii.gz"]


def test_with_channels_every_image_of_a_case_folder_is_an_input(tmp_path):
    touch(tmp_path, "a.nii.gz", "b.nii.gz", "a_seg.nii.gz")
    cases, ignored, single = find_cases(tmp_path, ["flair", "t1ce"], named=False)
    assert single and [Path(f).name for f in next(iter(cases.values()))] == ["a.nii.gz", "b.nii.gz"]


@pytest.mark.parametrize("key, names", [("modality", {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}),
                                        ("channel_names", {"0": "T2F", "1": "T1N", "2": "T1C", "3": "T2W"})])
def test_dataset_json_names_a_4d_file_channels(tmp_path, key, names):
    task = tmp_path / "Task01_BrainTumour"
    touch(task / "imagesTs", "BRATS_485.nii.gz")
    (task / "dataset.json").write_text(json.dumps({key: names}))
    assert dataset_channels(task / "imagesTs" / "BRATS_485.nii.gz", 4) == FOUR
    assert dataset_channels(task / "imagesTs" / "BRATS_485.nii.gz", 2) is None  # another channel count
