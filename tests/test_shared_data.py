"""Integration on the real data in ../shared/data: train a few steps through the CLI, then predict."""

import json

import nibabel as nib
import numpy as np
import pytest
import tifffile

from medseg.cli import main
from medseg.data.io import read_volume
from scripts.prepare_isbi2012 import prepare
from tests.conftest import REPO, shared

FAST = ["--trainer.accelerator=cpu", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        "--trainer.max_steps=2", "--trainer.limit_val_batches=1"]


def deepmedic_entry(case_dir) -> dict:
    return {"image": [str(case_dir / "Flair_subtrMeanDivStd.nii.gz"), str(case_dir / "T1c_subtrMeanDivStd.nii.gz")],
            "label": str(case_dir / "OTMultiClass.nii.gz")}


@pytest.fixture(scope="module")
def brats_run(tmp_path_factory):
    """The acceptance layout: BraTS 2021 case + DeepMedic training cases in one datalist, FLAIR + T1ce, brats2013."""
    b = shared("brats2021_case00006")
    dm = shared("deepmedic_brats2015_subset")
    entries = [{"image": [str(b / "BraTS2021_00006_flair.nii.gz"), str(b / "BraTS2021_00006_t1ce.nii.gz")],
                "label": str(b / "BraTS2021_00006_seg.nii.gz")}]
    entries += [deepmedic_entry(dm / "train" / c) for c in ("brats_2013_pat0005_1", "brats_2013_pat0006_1")]
    tmp = tmp_path_factory.mktemp("brats")
    (tmp / "dl.json").write_text(json.dumps({"training": entries,
                                             "validation": [deepmedic_entry(dm / "validation/brats_2013_pat0003_1")]}))
    rc = main(["train", "--config", str(REPO / "configs/brats.yaml"), f"--data.datalist={tmp / 'dl.json'}",
               "--data.modalities=[flair, t1ce]", "--data.label_convention=brats2013",
               f"--trainer.default_root_dir={tmp / 'run'}", *FAST])
    assert rc == 0
    return tmp / "run" / "checkpoints" / "best.ckpt"


def test_predict_unseen_patient_in_brats_layout(brats_run, tmp_path):
    source = shared("deepmedic_brats2015_subset", "test", "brats_2013_pat0001_1")
    case = tmp_path / "pat0001"
    case.mkdir()
    (case / "pat0001_flair.nii.gz").symlink_to(source / "Flair_subtrMeanDivStd.nii.gz")
    (case / "pat0001_t1ce.nii.gz").symlink_to(source / "T1c_subtrMeanDivStd.nii.gz")
    out = tmp_path / "out.nii.gz"
    assert main(["predict", str(case), "--model", str(brats_run), "--output", str(out), "--device", "cpu"]) == 0
    mask, ref = nib.load(out), nib.load(case / "pat0001_flair.nii.gz")
    assert mask.shape == ref.shape == (240, 240, 155)
    np.testing.assert_array_equal(mask.affine, ref.affine)
    assert mask.header["sform_code"] == ref.header["sform_code"]
    assert mask.header["qform_code"] == ref.header["qform_code"]
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2, 4}


def test_train_on_a_brats_folder_with_four_modalities(tmp_path):
    case = shared("brats2021_case00006")
    root = tmp_path / "root"
    root.mkdir()
    for name in ("BraTS2021_00006", "copy_of_00006"):
        (root / name).symlink_to(case)  # two case folders: one trains, one is held out
    rc = main(["train", "--config", str(REPO / "configs/brats.yaml"), f"--data.root={root}",
               f"--trainer.default_root_dir={tmp_path / 'run'}", *FAST])
    assert rc == 0
    out = tmp_path / "mask.nii.gz"
    assert main(["predict", str(case), "--model", str(tmp_path / "run/checkpoints/best.ckpt"), "--output", str(out),
                 "--device", "cpu"]) == 0
    assert nib.load(out).shape == (240, 240, 155)


def test_isbi_membranes_train_and_predict_tiff_and_nifti(tmp_path):
    datalist = prepare(shared("isbi2012_em"), tmp_path / "isbi")
    rc = main(["train", "--config", str(REPO / "configs/em_isbi.yaml"), f"--data.datalist={datalist}",
               f"--trainer.default_root_dir={tmp_path / 'run'}", *FAST])
    assert rc == 0
    crop = tifffile.imread(shared("isbi2012_em", "test-volume.tif"))[:6, :160, :192]
    tifffile.imwrite(tmp_path / "crop.tif", crop)
    ckpt = str(tmp_path / "run/checkpoints/best.ckpt")
    for out in (tmp_path / "m.tif", tmp_path / "m.nii.gz"):
        assert main(["predict", str(tmp_path / "crop.tif"), "--model", ckpt, "--output", str(out)]) == 0
    tif = tifffile.imread(tmp_path / "m.tif")
    assert tif.shape == crop.shape and set(np.unique(tif)) <= {0, 255}  # em_membrane: 0 = membrane
    nii = nib.load(tmp_path / "m.nii.gz")
    assert nii.shape == (192, 160, 6)
    np.testing.assert_allclose(nii.header.get_zooms(), (0.004, 0.004, 0.05), rtol=1e-6)
    assert nii.header.get_xyzt_units()[0] == "micron"
    np.testing.assert_array_equal(np.asarray(nii.dataobj), tif.transpose(2, 1, 0))


def test_fibsem_hdf5_reads_as_xyz():
    v = read_volume(shared("gala_fibsem_em", "train-image.h5"), voxel_size=(10, 10, 10))
    assert v.array.shape == (200, 100, 50)
    labels = read_volume(shared("gala_fibsem_em", "train-gt.lzf.h5")).array
    assert labels.shape == (200, 100, 50) and labels.min() == 0 and labels.max() > 50
