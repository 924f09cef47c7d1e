import json

import pytest

from medseg.cli import main
from tests.conftest import write_case
from tests.unit.test_checks import FLIPPED, relabel

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






@pytest.mark.parametrize("argv", [[], ["--root", "a", "--datalist", "b"]], ids=["neither", "both"])
def test_one_source_is_needed(argv, capsys):
    assert main(["check-data", *argv]) == 2
    assert "exactly one of --root" in capsys.readouterr().err
