"""Integration on the real data in ../shared/data: train a few steps through the CLI, then predict."""

import json

import nibabel as nib
import numpy as np
import pytest
import tifffile

from medseg.cli import main
from medseg.data.conversion.isbi2012 import prepare
from medseg.data.io import read_volume
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


def test_bundled_model_segments_the_held_out_patient(tmp_path):
    """The out-of-the-box promise on real data: no --model, DeepMedic file names, Dice from medseg's metrics against
    the manual labels (measured 0.860 WT; the model never trained on this patient)."""
    from medseg.evaluation.metrics import evaluate_case

    source = shared("deepmedic_brats2015_subset", "test", "brats_2013_pat0001_1")
    out = tmp_path / "pat0001.nii.gz"
    files = [str(source / "T1c_subtrMeanDivStd.nii.gz"), str(source / "Flair_subtrMeanDivStd.nii.gz")]  # t1ce first
    assert main(["predict", *files, "--output", str(out), "--device", "cpu"]) == 0
    mask, truth = nib.load(out), nib.load(source / "OTMultiClass.nii.gz")
    np.testing.assert_array_equal(mask.affine, nib.load(files[0]).affine)
    dice = evaluate_case(np.asarray(mask.dataobj), np.asarray(truth.dataobj), "brats2013")
    assert dice["wt"]["dice"] >= 0.80 and dice["tc"]["dice"] >= 0.6, dice


def test_bundled_model_reads_a_four_modality_brats_folder_in_any_file_order(tmp_path):
    """A BraTS 2021 case folder (four modalities and the seg) with the two-channel default model, and the same
    files given one by one in a shuffled order: one mask (channels matched by name, extras dropped)."""
    source = shared("brats2021_case00006")
    folder_mask, files_mask = tmp_path / "folder.nii.gz", tmp_path / "files.nii.gz"
    assert main(["predict", str(source), "--output", str(folder_mask), "--device", "cpu"]) == 0
    shuffled = [str(source / f"BraTS2021_00006_{m}.nii.gz") for m in ("t2", "t1ce", "t1", "flair")]
    assert main(["predict", *shuffled, "--output", str(files_mask), "--device", "cpu"]) == 0
    a, b = (np.asarray(nib.load(p).dataobj) for p in (folder_mask, files_mask))
    np.testing.assert_array_equal(a, b)
    assert (a > 0).sum() > 1000  # a tumour was found, not an empty mask


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


def test_fast_cpu_path_predicts_what_the_plain_path_does(tmp_path):
    """Issue 13's check on a real case: the default CPU path (channels-last, layout-keeping norms, in-place stream
    sums, the decoder's early release) against the plain NCDHW path on torch's own kernels, bundled model."""
    source = shared("deepmedic_brats2015_subset", "test", "brats_2013_pat0001_1")
    files = [str(source / "Flair_subtrMeanDivStd.nii.gz"), str(source / "T1c_subtrMeanDivStd.nii.gz")]
    masks = {}
    for layout in ("--channels-last", "--no-channels-last"):
        out = tmp_path / f"{layout}.nii.gz"
        assert main(["predict", *files, "--output", str(out), "--device", "cpu", layout]) == 0
        masks[layout] = np.asarray(nib.load(out).dataobj)
    fast, plain = masks.values()
    overlap = 2 * np.sum((fast > 0) & (plain > 0)) / (np.sum(fast > 0) + np.sum(plain > 0))
    assert overlap >= 0.999 and (fast == plain).mean() >= 0.9999, (overlap, (fast == plain).mean())


def test_bundled_model_paints_little_on_a_tumour_free_brain(tmp_path):
    """The held-out patient's healthier hemisphere mirrored over the other (no tumour left): the card's 8.6 mL of
    painted 'tumour' (the earlier single network: 35.3 mL), through `medseg robustness`."""
    import json

    source = shared("deepmedic_brats2015_subset", "test", "brats_2013_pat0001_1")
    datalist = tmp_path / "one.json"
    entry = {"case": "pat0001", "image": [str(source / "Flair_subtrMeanDivStd.nii.gz"),
                                          str(source / "T1c_subtrMeanDivStd.nii.gz")],
             "label": str(source / "OTMultiClass.nii.gz")}
    datalist.write_text(json.dumps({"training": [entry]}))
    out = tmp_path / "scores.json"
    assert main(["robustness", "--datalist", str(datalist), "--perturbations", "none", "healthy hemisphere mirrored",
                 "--output", str(out), "--device", "cpu"]) == 0
    rows = json.loads(out.read_text())["cases"]["pat0001"]
    assert rows["healthy hemisphere mirrored"]["wt_ref_ml"] == 0
    assert rows["healthy hemisphere mirrored"]["wt_pred_ml"] < 20
    assert rows["none"]["dice_wt"] >= 0.85
