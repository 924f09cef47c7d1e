"""`medseg check-data` on the real BraTS and EM sets in the shared data."""

import json

import h5py
import numpy as np

from medseg.cli import main
from tests.conftest import shared
from tests.data.test_shared_data import deepmedic_entry


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
