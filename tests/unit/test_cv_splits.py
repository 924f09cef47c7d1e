"""Cross-validation splits (medseg.training.cv): seeded, disjoint, covering; a stale or edited splits.json is caught."""

import json

import pytest

from medseg.errors import MedsegError
from medseg.training.cv import CvOptions, case_names, check_splits, make_splits, read_or_make_splits

NAMES = [f"case{i}" for i in range(7)]


def test_splits_cover_every_case_once_and_follow_the_seed():
    splits = make_splits(NAMES, 3, seed=1)
    vals = [set(s["val"]) for s in splits]
    assert sorted(c for v in vals for c in v) == NAMES  # disjoint and covering
    assert sorted(len(v) for v in vals) == [2, 2, 3]
    for s in splits:
        assert set(s["train"]) == set(NAMES) - set(s["val"])
    assert make_splits(NAMES, 3, seed=1) == splits
    assert make_splits(NAMES, 3, seed=2) != splits


def test_existing_splits_are_reused_and_checked(tmp_path):
    path = tmp_path / "splits.json"
    edited = [{"train": NAMES[1:], "val": NAMES[:1]}, {"train": NAMES[:1], "val": NAMES[1:]}]
    path.write_text(json.dumps(edited))
    assert read_or_make_splits(path, NAMES, 2, seed=0) == edited  # the user's folds, not the seed's
    with pytest.raises(MedsegError, match="has 2 folds but --cv.folds is 3"):
        read_or_make_splits(path, NAMES, 3, seed=0)
    with pytest.raises(MedsegError, match=r"data cases in no fold's val list: \['case6'\]"):
        check_splits([{"train": ["case0"], "val": NAMES[1:6]}, {"train": ["case1"], "val": ["case0"]}], NAMES, 2, path)
    with pytest.raises(MedsegError, match=r"cases not in the data: \['other'\]"):
        check_splits([{"train": ["other"], "val": NAMES}, {"train": NAMES, "val": []}], NAMES, 2, path)
    with pytest.raises(MedsegError, match="more than one fold's val list"):
        check_splits([{"train": NAMES[3:], "val": NAMES[:3]}, {"train": NAMES[:1], "val": NAMES[:3] + NAMES[3:]}],
                     NAMES, 2, path)


def test_fold_options():
    assert CvOptions(folds=3).folds_to_run() == [0, 1, 2]
    assert CvOptions(folds=3, fold=2).folds_to_run() == [2]
    with pytest.raises(MedsegError, match="--cv.fold must be in 0..2"):
        CvOptions(folds=3, fold=3).folds_to_run()
    with pytest.raises(MedsegError, match="at least 2"):
        CvOptions(folds=1).folds_to_run()
    with pytest.raises(MedsegError, match="needs at least 8 cases"):
        make_splits(NAMES, 8, seed=0)


def test_case_names_without_case_entries():
    """A datalist entry without `case` is named by its first image's path: the case name is taken from the file
    (BraTS) or, when the files are named alike (DeepMedic), from its folder."""
    brats = [{"case": f"d/B_{i}_flair.nii.gz", "image": [f"/x/B_{i}_flair.nii.gz"]} for i in range(2)]
    assert case_names(brats) == ["B_0", "B_1"]
    deepmedic = [{"case": f"train/p{i}/Flair.nii.gz", "image": [f"/x/train/p{i}/Flair.nii.gz"]} for i in range(2)]
    assert case_names(deepmedic) == ["p0", "p1"]
    assert case_names([{"case": "a b/c", "image": ["/a"]}, {"case": "x", "image": ["/b"]}]) == ["a", "x"]
    with pytest.raises(MedsegError, match="unique case names"):
        case_names([{"case": "a", "image": []}, {"case": "a", "image": []}])
