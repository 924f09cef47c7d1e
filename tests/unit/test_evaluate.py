"""`medseg evaluate` and medseg.evaluation.metrics: hand-computed scores, independent NumPy/SciPy checks, empty regions,
the JSON shape, EM instance and membrane metrics, and bad input as one `error:` line with exit code 2."""

import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import tifffile
from scipy import ndimage

from medseg.cli import main
from medseg.evaluation.evaluate import case_name
from medseg.evaluation.metrics import evaluate_case
from tests.conftest import BRATS_AFFINE, synthetic_case

METRICS = {"dice", "hd95", "nsd", "volume_pred_ml", "volume_true_ml"}


def cube(shape=(12, 12, 12), start=(2, 2, 2), size=4, value=2) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    label[tuple(slice(s, s + size) for s in start)] = value
    return label


def save(path, array, affine=BRATS_AFFINE):
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def scipy_hd95(pred: np.ndarray, truth: np.ndarray, spacing) -> float:
    """95 % Hausdorff distance from SciPy's distance transform: the larger of the two directed 95th percentiles
    of distances between the masks' surface voxels (DeepMind's surface-distance definition)."""
    surfaces = [m & ~ndimage.binary_erosion(m) for m in (pred.astype(bool), truth.astype(bool))]
    to_truth = ndimage.distance_transform_edt(~surfaces[1], sampling=spacing)[surfaces[0]]
    to_pred = ndimage.distance_transform_edt(~surfaces[0], sampling=spacing)[surfaces[1]]
    return max(np.percentile(to_truth, 95), np.percentile(to_pred, 95))


def test_hand_computed_shifted_cube():
    """A 4³ cube moved one voxel along x, with 2 mm x-spacing: overlap 3/4 → Dice 0.75; of the 56 surface voxels
    of each cube, 16 (the far face) lie 2 mm from the other surface, 4 lie 1 mm and 36 on it → HD95 = 2 mm, and
    at 1 mm tolerance NSD = (40 + 40) / 112; at 2 mm every surface voxel is within tolerance."""
    truth, pred = cube(), cube(start=(3, 2, 2))
    wt = evaluate_case(pred, truth, "brats2021", spacing=(2.0, 1.0, 1.0), tolerance=1.0)["wt"]
    assert wt["dice"] == pytest.approx(0.75)
    assert wt["hd95"] == pytest.approx(2.0)
    assert wt["nsd"] == pytest.approx(80 / 112)
    assert wt["volume_pred_ml"] == wt["volume_true_ml"] == pytest.approx(64 * 2.0 / 1000)
    assert evaluate_case(pred, truth, "brats2021", (2.0, 1.0, 1.0), tolerance=2.0)["wt"]["nsd"] == pytest.approx(1)


def test_hd95_agrees_with_scipy_on_anisotropic_spacing():
    _, truth = synthetic_case(0)
    _, other = synthetic_case(5)
    spacing = (0.8, 1.5, 3.0)
    scores = evaluate_case(other, truth, "brats2021", spacing=spacing)
    for region, values in (("wt", (1, 2, 4)), ("et", (4,))):
        expected = scipy_hd95(np.isin(other, values), np.isin(truth, values), spacing)
        assert expected > 3.0  # the two tumours differ: a real distance is being compared
        assert abs(scores[region]["hd95"] - expected) <= min(spacing)


def test_empty_regions_scored_as_brats_does():
    empty, lesion = np.zeros((10, 20, 30), np.uint8), cube((10, 20, 30))
    spacing = (1.0, 1.0, 2.0)
    diagonal = np.linalg.norm(np.array([10, 20, 30]) * spacing)
    both_empty = evaluate_case(empty, empty, "brats2021", spacing)["et"]
    assert (both_empty["dice"], both_empty["hd95"], both_empty["nsd"]) == (1.0, 0.0, 1.0)
    for pred, truth in ((empty, lesion), (lesion, empty)):
        one_empty = evaluate_case(pred, truth, "brats2021", spacing)["wt"]
        assert (one_empty["dice"], one_empty["nsd"]) == (0.0, 0.0)
        assert one_empty["hd95"] == pytest.approx(diagonal)
    brats_grid = evaluate_case(np.zeros((240, 240, 155), np.uint8), cube((240, 240, 155)), "brats2021")
    assert brats_grid["wt"]["hd95"] == pytest.approx(373.13, abs=0.01)  # the BraTS challenge's penalty


def test_cli_folders_json_csv_and_wt_dice_against_numpy(tmp_path, capsys):
    preds, truths = tmp_path / "pred", tmp_path / "gt"
    preds.mkdir()
    affine = np.diag([0.9, 1.2, 2.5, 1.0])
    for i in range(2):
        _, truth = synthetic_case(i)
        (truths / f"case{i}").mkdir(parents=True)
        save(truths / f"case{i}" / f"case{i}_seg.nii.gz", truth, affine)  # BraTS case-folder layout
        pred = truth.copy()
        pred[ndimage.binary_dilation(truth > 0) & (truth == 0)] = 2  # one voxel of extra edema
        pred[truth == 4] = 1 if i else 4  # case1 misses its enhancing tumour
        save(preds / f"case{i}_pred.nii.gz", pred, affine)
    (truths / "case9").mkdir()
    save(truths / "case9" / "case9_seg.nii.gz", truth, affine)  # ground truth nobody predicted: named, not scored
    out = tmp_path / "scores.json"
    assert main(["evaluate", str(preds), str(truths), "--label-convention", "brats2021", "--json", str(out),
                 "--csv", str(tmp_path / "scores.csv")]) == 0
    result = json.loads(out.read_text())
    assert set(result) == {"cases", "summary"} and set(result["cases"]) == {"case0", "case1"}
    for scores in result["cases"].values():
        assert set(scores) == {"wt", "tc", "et"} and all(set(m) == METRICS for m in scores.values())
    assert set(result["summary"]) == {"wt", "tc", "et"}
    assert all(set(s) == METRICS and all(set(v) == {"mean", "sd", "median"} for v in s.values())
               for s in result["summary"].values())
    for i in range(2):
        p = np.asarray(nib.load(preds / f"case{i}_pred.nii.gz").dataobj) > 0
        t = np.asarray(nib.load(truths / f"case{i}" / f"case{i}_seg.nii.gz").dataobj) > 0
        assert result["cases"][f"case{i}"]["wt"]["dice"] == pytest.approx(2 * (p & t).sum() / (p.sum() + t.sum()),
                                                                         abs=1e-3)
    assert result["cases"]["case0"]["et"]["dice"] == 1.0 and result["cases"]["case1"]["et"]["dice"] == 0.0
    assert result["summary"]["et"]["dice"] == {"mean": 0.5, "sd": pytest.approx(np.sqrt(0.5)), "median": 0.5}
    assert len((tmp_path / "scores.csv").read_text().splitlines()) == 1 + 2 * 3
    printed = capsys.readouterr()
    assert "mean of 2" in printed.out and "no prediction for 1 ground-truth case(s), not scored: case9" in printed.err


def test_case_names_match_across_naming_styles():
    for name in ("BraTS2021_00006_seg.nii.gz", "BraTS2021_00006_pred.nii.gz", "BraTS2021_00006.nii.gz"):
        assert case_name(Path(name)) == "BraTS2021_00006"
    assert case_name(Path("BraTS-GLI-00000-000-seg.nii.gz")) == "BraTS-GLI-00000-000"  # BraTS 2023
    assert case_name(Path("test-gt.lzf.h5")) == case_name(Path("test_ids.tif")) == "test"


def test_cli_bad_input_is_one_error_line(tmp_path, capsys):
    _, truth = synthetic_case(0)
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    gt = save(tmp_path / "gt" / "a_seg.nii.gz", truth)
    save(tmp_path / "pred" / "a_pred.nii.gz", truth)
    save(tmp_path / "pred" / "b_pred.nii.gz", truth)
    shifted = BRATS_AFFINE.copy()
    shifted[0, 3] += 2.0
    cases = {
        "no ground truth for case b": [str(tmp_path / "pred"), str(tmp_path / "gt")],
        "shape": [str(save(tmp_path / "small.nii.gz", truth[:-1])), str(gt)],
        "affine differs": [str(save(tmp_path / "moved.nii.gz", truth, shifted)), str(gt)],
        "do not belong to the brats2021": [str(save(tmp_path / "msd.nii.gz", truth.clip(0, 3))), str(gt)],
        "unknown label convention": [str(gt), str(gt), "--label-convention", "brats2019"],
    }
    for message, args in cases.items():
        assert main(["evaluate", *args]) == 2, message
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err


def test_em_instance_metrics_known_split_and_merge(tmp_path):
    truth = np.zeros((8, 8, 8), np.int32)
    truth[:4], truth[4:] = 1, 2  # two neurons of equal size
    split = truth.copy()
    split[:4, :4] = 7  # neuron 1 cut in two halves: H(pred | truth) = 1/2 bit, nothing merged
    scores = evaluate_case(split, truth, "em_membrane", instances=True)["instances"]
    assert scores["voi_split"] == pytest.approx(0.5) and scores["voi_merge"] == pytest.approx(0.0)
    merged = np.where(truth > 0, 3, 0)  # both neurons as one: H(truth | pred) = 1 bit
    scores = evaluate_case(merged, truth, "em_membrane", instances=True)["instances"]
    assert scores["voi_merge"] == pytest.approx(1.0) and scores["voi_split"] == pytest.approx(0.0)
    assert scores["adapted_rand_error"] == pytest.approx(1 / 3, abs=0.01)  # Rand precision 1/2, recall 1
    # through the CLI: prediction as a z-y-x TIFF, ground truth as HDF5, read by medseg.data.io
    tifffile.imwrite(tmp_path / "cube_ids.tif", split.transpose(2, 1, 0))
    with h5py.File(tmp_path / "cube-gt.h5", "w") as f:
        f["stack"] = truth.transpose(2, 1, 0)
    out = tmp_path / "em.json"
    assert main(["evaluate", str(tmp_path / "cube_ids.tif"), str(tmp_path / "cube-gt.h5"), "--label-convention",
                 "em_membrane", "--instances", "--json", str(out)]) == 0
    case = json.loads(out.read_text())["cases"]["cube"]["instances"]
    assert case["voi_split"] == pytest.approx(0.5) and case["voi_merge"] == pytest.approx(0.0)


def test_em_membrane_f1():
    """Ground truth as ISBI 2012 and prediction as medseg writes it: 0 membrane, 255 interior."""
    truth = np.full((4, 4, 4), 255, np.uint8)
    truth[0] = 0  # 16 membrane voxels
    pred = np.full_like(truth, 255)
    pred[0, :2] = 0  # 8 of them found
    pred[1, 0] = 0  # and 4 false
    scores = evaluate_case(pred, truth, "em_membrane")["membrane"]
    assert scores["precision"] == pytest.approx(8 / 12) and scores["recall"] == pytest.approx(8 / 16)
    assert scores["f1"] == pytest.approx(2 * 8 / (12 + 16))
