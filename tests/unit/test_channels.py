"""Channel identity: files are matched to the model's modalities by name or by --channels, never by their order."""

from pathlib import Path

import pytest

from medseg.errors import MedsegError
from medseg.inference.channels import case_name, group_cases, match_channels

MODEL = ["flair", "t1ce"]


def names(channels) -> list[tuple[str, int | None]]:
    return [(Path(c.path).name, c.index) for c in channels]


@pytest.mark.parametrize("files, expected", [
    (["x_t1ce.nii.gz", "x_flair.nii.gz"], ["x_flair.nii.gz", "x_t1ce.nii.gz"]),  # reordered by name
    (["BraTS-GLI-00001-000-t1c.nii.gz", "BraTS-GLI-00001-000-t2f.nii.gz"],  # BraTS 2023 names
     ["BraTS-GLI-00001-000-t2f.nii.gz", "BraTS-GLI-00001-000-t1c.nii.gz"]),
    (["T1c_subtrMeanDivStd.nii.gz", "Flair_subtrMeanDivStd.nii.gz"],  # DeepMedic names
     ["Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"]),
    (["c_t1.nii.gz", "c_t2.nii.gz", "c_t1ce.nii.gz", "c_flair.nii.gz"], ["c_flair.nii.gz", "c_t1ce.nii.gz"]),  # extras
    (["case_0001.nii.gz", "case_0000.nii.gz"], ["case_0000.nii.gz", "case_0001.nii.gz"]),  # nnU-Net: the plan's order
    (["flair_study_t1ce.nii.gz", "flair_study_flair.nii.gz"], ["flair_study_flair.nii.gz", "flair_study_t1ce.nii.gz"]),
], ids=["brats", "brats2023", "deepmedic", "four-modalities", "nnunet-index", "modality-word-in-case-name"])
def test_files_are_matched_by_name(files, expected):
    assert [n for n, _ in names(match_channels(files, MODEL))] == expected


def test_channels_option_names_the_order_of_unnamed_files():
    picked = match_channels(["a.nii.gz", "b.nii.gz", "c.nii.gz"], MODEL, channels=["t1", "t1ce", "flair"])
    assert names(picked) == [("c.nii.gz", None), ("b.nii.gz", None)]


def test_channels_option_contradicting_a_file_name_is_an_error():
    with pytest.raises(MedsegError, match="x_t1ce.nii.gz: --channels says flair, but the file name says t1ce"):
        match_channels(["x_t1ce.nii.gz", "x_flair.nii.gz"], MODEL, channels=["flair", "t1ce"])


def test_4d_file_needs_channels_and_extra_channels_are_dropped_by_name():
    with pytest.raises(MedsegError, match="--channels"):
        match_channels(["msd.nii.gz"], MODEL, n_channels=[4])
    picked = match_channels(["msd.nii.gz"], MODEL, channels=["flair", "t1", "t1ce", "t2"], n_channels=[4])
    assert names(picked) == [("msd.nii.gz", 0), ("msd.nii.gz", 2)]


@pytest.mark.parametrize("files, message", [
    (["a.nii.gz", "b.nii.gz"], "a.nii.gz: cannot tell which modality"),
    (["x_flair.nii.gz", "y_flair.nii.gz"], "y_flair.nii.gz: a second file for flair"),
    (["x_flair.nii.gz", "x_t2.nii.gz"], "no input for modality t1ce"),
], ids=["unnamed", "duplicate", "missing"])
def test_unidentifiable_inputs_are_errors(files, message):
    with pytest.raises(MedsegError, match=message):
        match_channels(files, MODEL)


def test_case_names():
    assert case_name(["/d/BraTS2021_00006_flair.nii.gz"], MODEL) == "BraTS2021_00006"
    assert case_name(["/d/BraTS-GLI-00001-000-t2f.nii.gz"], MODEL) == "BraTS-GLI-00001-000"
    assert case_name(["/d/pat1/Flair_subtrMeanDivStd.nii.gz"], MODEL) == "pat1"
    assert case_name(["/d/case7_0000.nii.gz"], MODEL) == "case7"


def test_group_cases_in_a_folder(tmp_path):
    for case in ("a", "b"):
        (tmp_path / case).mkdir()
        for m in ("flair", "t1ce", "seg"):
            (tmp_path / case / f"{case}_{m}.nii.gz").touch()
    for i in range(2):
        (tmp_path / f"loose_{i:04d}.nii.gz").touch()
    cases = group_cases(tmp_path, MODEL)
    assert sorted(cases) == ["a", "b", "loose"]
    assert [Path(f).name for f in cases["a"]] == ["a_flair.nii.gz", "a_t1ce.nii.gz"]  # the label is not an input
    assert len(cases["loose"]) == 2
