import json

import h5py
import numpy as np
import pytest

from medseg.cli import main
from tests.conftest import shared, write_case
from tests.test_checks import FLIPPED, relabel
from tests.test_shared_data import deepmedic_entry

MODALITIES = ["--modalities", "flair", "t1ce"]


def test_every_bad_case_is_listed_with_its_file(tmp_path, capsys):
    for i in range(5):
        write_case(tmp_path / "root", f"case{i}", seed=i)
    flipped = relabel(tmp_path / "root/case1", affine=FLIPPED)
    (tmp_path / "root/case2/case2_t1ce.nii.gz").unlink()
    wrong_value = relabel(tmp_path / "root/case3", mapping={2: 5})
    rc = main(["check-data", "--root", str(tmp_path / "root"), *MODALITIES, "--json", str(tmp_path / "fp.json")])
    out, err = capsys.readouterr()
    assert rc == 2
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3
    assert f"error: {flipped}: label direction" in err
    assert f"error: {tmp_path / 'root/case2'}: missing modality 't1ce'" in err
    assert f"error: {wrong_value}: label values [5]" in err
    report = json.loads((tmp_path / "fp.json").read_text())
    assert report["cases"] == 2 and report["bad_cases"] == 3 and len(report["errors"]) == 3
    assert "2 readable cases, 3 problems" in out


def test_fingerprint_of_a_clean_set(tmp_path, capsys):
    for i in range(3):
        write_case(tmp_path / "root", f"case{i}", seed=i)
    assert main(["check-data", "--root", str(tmp_path / "root"), *MODALITIES, "--json", str(tmp_path / "fp.json")]) == 0
    report = json.loads((tmp_path / "fp.json").read_text())
    assert report["cases"] == 3 and report["errors"] == []
    assert report["shape"]["median"] == [32, 36, 28] and report["spacing"]["max"] == [1, 1, 1]
    assert report["orientation"] == {"LPS": 3}
    assert set(report["label_voxels"]) == {"0", "1", "2", "4"} and report["label_cases"]["4"] == 3
    flair, t1ce = report["intensity_in_foreground"]["flair"], report["intensity_in_foreground"]["t1ce"]
    assert 200 < flair["mean"] < 300 and flair["p0.5"] < flair["median"] < flair["p99.5"]  # tumour: 2.5 × 100
    assert t1ce["p99.5"] > 250  # the enhancing rim (3 × 100) is inside the foreground
    assert "LPS ×3" in capsys.readouterr().out


def test_brats2023_set_under_brats2013_is_flagged(tmp_path, capsys):
    for i in range(2):
        write_case(tmp_path / "root", f"case{i}", seed=i)
        relabel(tmp_path / f"root/case{i}", mapping={4: 3})
    args = ["check-data", "--root", str(tmp_path / "root"), *MODALITIES]
    assert main([*args, "--label-convention", "brats2013"]) == 2
    assert "--data.label_convention=brats2023" in capsys.readouterr().err
    assert main([*args, "--label-convention", "brats2023"]) == 0


def test_real_brats_sets_pass(tmp_path, capsys):
    """BraTS 2021 (labels 0, 1, 2, 4) and a BraTS 2013 case (0-4, float32 labels) from ../shared."""
    (tmp_path / "root").mkdir()
    (tmp_path / "root/BraTS2021_00006").symlink_to(shared("brats2021_case00006"))
    assert main(["check-data", "--root", str(tmp_path / "root"), "--modalities", "flair", "t1", "t1ce", "t2",
                 "--json", str(tmp_path / "a.json")]) == 0
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["cases"] == 1 and report["orientation"] == {"LPS": 1}
    assert report["label_voxels"] == {"0": 8790089, "1": 25506, "2": 85957, "4": 26448}
    dm = shared("deepmedic_brats2015_subset")
    (tmp_path / "dl.json").write_text(json.dumps({"training": [deepmedic_entry(dm / "train/brats_2013_pat0005_1")]}))
    assert main(["check-data", "--datalist", str(tmp_path / "dl.json"), "--modalities", "flair", "t1c",
                 "--label-convention", "brats2013"]) == 0
    assert "0 problems" in capsys.readouterr().out


def test_em_id_volumes(tmp_path, capsys):
    """The gala FIB-SEM ids pass; the same volume without its 0 (boundary) voxels is an error."""
    gala = shared("gala_fibsem_em")
    ids = h5py.File(gala / "train-gt.lzf.h5")["stack"][:]
    with h5py.File(tmp_path / "no-boundary.h5", "w") as f:
        f["stack"] = np.where(ids == 0, 1, ids)
    entries = [{"image": str(gala / "train-image.h5"), "label": str(gala / "train-gt.lzf.h5")},
               {"image": str(gala / "train-image.h5"), "label": str(tmp_path / "no-boundary.h5")}]
    (tmp_path / "dl.json").write_text(json.dumps({"training": entries}))
    rc = main(["check-data", "--datalist", str(tmp_path / "dl.json"), "--modalities", "em", "--label-convention",
               "em_membrane", "--voxel-size", "10", "10", "10", "--json", str(tmp_path / "fp.json")])
    assert rc == 2
    assert f"error: {tmp_path / 'no-boundary.h5'}: no voxel has label 0" in capsys.readouterr().err
    report = json.loads((tmp_path / "fp.json").read_text())
    assert report["cases"] == 1 and set(report["label_voxels"]) == {"0", "positive"}
    assert report["spacing"]["median"] == [10, 10, 10]


@pytest.mark.parametrize("argv", [[], ["--root", "a", "--datalist", "b"]], ids=["neither", "both"])
def test_one_source_is_needed(argv, capsys):
    assert main(["check-data", *argv]) == 2
    assert "exactly one of --root" in capsys.readouterr().err
