"""Cross-validation end to end on tiny synthetic cases: folds, out-of-fold predictions, the fold ensemble,
cv-summary and find-best, through the `medseg` command as users run it."""

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.cli import main
from medseg.evaluation.evaluate import evaluate
from medseg.inference.ensemble import load_predictor, spread
from medseg.labels import get_convention
from tests.conftest import REPO, TINY, write_case

FOLDS = 3


def train_cv(datalist: Path, root: Path, *extra: str) -> int:
    return main(["train", "--config", str(REPO / "configs/brats.yaml"), f"--data.datalist={datalist}", *TINY,
                 f"--trainer.default_root_dir={root}", "--trainer.max_steps=2", "--cv.folds", str(FOLDS), *extra])


@pytest.fixture(scope="module")
def data(brats_root, tmp_path_factory) -> dict[str, Path]:
    """A datalist of the 3 synthetic cases (2 training + 1 validation, no `case` names), and an unseen 4th case."""
    folder = tmp_path_factory.mktemp("cvdata")
    entry = lambda c: {"image": [f"{brats_root}/{c}/{c}_{m}.nii.gz" for m in ("flair", "t1ce")],  # noqa: E731
                       "label": f"{brats_root}/{c}/{c}_seg.nii.gz"}
    datalist = folder / "datalist.json"
    datalist.write_text(json.dumps({"training": [entry("case0"), entry("case1")], "validation": [entry("case2")]}))
    return {"datalist": datalist, "unseen": write_case(folder, "unseen", seed=7, with_label=False)}


@pytest.fixture(scope="module")
def cv_root(data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cv") / "run"
    assert train_cv(data["datalist"], root) == 0
    return root


@pytest.fixture(scope="module")
def cv_root2(data, tmp_path_factory) -> Path:
    """A second configuration (narrower net, another seed) on the same cases, for ensembles of configurations."""
    root = tmp_path_factory.mktemp("cv2") / "run"
    assert train_cv(data["datalist"], root, "--model.channels=[2,4]", "--seed_everything=7") == 0
    return root


def probabilities(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj, dtype=np.float32)


def test_folds_splits_and_out_of_fold_predictions(cv_root, brats_root):
    splits = json.loads((cv_root / "splits.json").read_text())
    assert len(splits) == FOLDS
    vals = [c for s in splits for c in s["val"]]
    assert sorted(vals) == ["case0", "case1", "case2"]  # disjoint and covering the training + validation lists
    for k, s in enumerate(splits):
        assert set(s["train"]) == {"case0", "case1", "case2"} - set(s["val"])
        fold = cv_root / f"fold_{k}"
        best, last = (torch.load(fold / "checkpoints" / n, weights_only=True) for n in ("best.ckpt", "last.ckpt"))
        assert best["global_step"] == last["global_step"] == 2  # the fold's final model in both
        assert all(torch.equal(best["state_dict"][n], last["state_dict"][n]) for n in best["state_dict"])
        manifest = json.loads((fold / "validation.json").read_text())
        assert sorted(manifest["cases"]) == s["val"]
        for case in s["val"]:
            mask = nib.load(fold / "validation" / f"{case}.nii.gz")
            source = nib.load(brats_root / case / f"{case}_flair.nii.gz")
            assert mask.shape == source.shape and np.array_equal(mask.affine, source.affine)
            probs = probabilities(fold / "validation_probabilities" / f"{case}.nii.gz")
            assert probs.shape == (*source.shape, 3)
            regions = get_convention("brats2021").from_regions(np.moveaxis(probs > 0.5, -1, 0).astype(np.uint8))
            assert np.array_equal(np.asarray(mask.dataobj), regions)  # mask and probabilities agree


def test_splits_are_reused_and_one_fold_runs(cv_root, data, tmp_path, capsys):
    root = tmp_path / "edited"
    root.mkdir()
    edited = [{"train": ["case1", "case2"], "val": ["case0"]}, {"train": ["case0", "case2"], "val": ["case1"]},
              {"train": ["case0", "case1"], "val": ["case2"]}]
    (root / "splits.json").write_text(json.dumps(edited))
    assert train_cv(data["datalist"], root, "--cv.fold=1", "--cv.seed=99") == 0
    assert json.loads((root / "splits.json").read_text()) == edited
    assert sorted(p.name for p in root.iterdir()) == ["fold_1", "splits.json"]
    assert sorted(json.loads((root / "fold_1/validation.json").read_text())["cases"]) == ["case1"]
    capsys.readouterr()
    assert train_cv(data["datalist"], cv_root, "--cv.folds=2") == 2  # K differs from the splits.json there
    err = capsys.readouterr().err  # Lightning's "Seed set" line comes first
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: ")
    assert "has 3 folds but --cv.folds is 2" in err


def predict(*args: str) -> int:
    return main(["predict", *map(str, args), "--device", "cpu", "--overwrite"])


def test_fold_ensemble_is_the_mean_of_the_folds(cv_root, data, tmp_path):
    singles = []
    for k in range(FOLDS):
        out = tmp_path / f"p{k}.nii.gz"
        assert predict(data["unseen"], "--model", cv_root / f"fold_{k}/checkpoints/best.ckpt",
                       "--save-probabilities", out, "--output", tmp_path / f"m{k}.nii.gz") == 0
        singles.append(probabilities(out))
    mask_path = tmp_path / "ensemble.nii.gz"
    assert predict(data["unseen"], "--model", cv_root, "--save-probabilities", tmp_path / "pe.nii.gz",
                   "--output", mask_path) == 0
    mean = probabilities(tmp_path / "pe.nii.gz")
    assert np.abs(mean - np.mean(singles, axis=0)).max() <= 1e-5
    assert np.abs(singles[0] - singles[1]).max() > 1e-3  # the folds differ, so the mean is not any one of them
    mask, source = nib.load(mask_path), nib.load(data["unseen"] / "unseen_flair.nii.gz")
    assert np.array_equal(mask.affine, source.affine) and mask.header.get_zooms() == source.header.get_zooms()
    assert (mask.header["sform_code"], mask.header["qform_code"]) == (source.header["sform_code"],
                                                                      source.header["qform_code"])
    regions = get_convention("brats2021").from_regions(np.moveaxis(mean > 0.5, -1, 0).astype(np.uint8))
    assert np.array_equal(np.asarray(mask.dataobj), regions)


def test_ensemble_of_configurations_weighs_each_equally(cv_root, cv_root2, data, tmp_path):
    def saved(model: str, name: str) -> np.ndarray:
        assert predict(data["unseen"], "--model", model, "--save-probabilities", tmp_path / name,
                       "--output", tmp_path / f"mask_{name}") == 0
        return probabilities(tmp_path / name)

    first, second, both = saved(str(cv_root), "a.nii.gz"), saved(str(cv_root2), "b.nii.gz"), \
        saved(f"{cv_root},{cv_root2}", "ab.nii.gz")
    assert np.abs(both - (first + second) / 2).max() <= 1e-5


def test_members_must_agree_on_channels(cv_root, data, tmp_path, capsys):
    ckpt = torch.load(cv_root / "fold_0/checkpoints/best.ckpt", weights_only=True)
    ckpt["medseg"]["modalities"] = ["t1", "t2"]  # same network shape, other inputs
    other = tmp_path / "other.ckpt"
    torch.save(ckpt, other)
    assert predict(data["unseen"], "--model", f"{cv_root},{other}", "--output", tmp_path / "m.nii.gz") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "members disagree on input channels" in err and "[t1, t2]" in err
    assert not (tmp_path / "m.nii.gz").exists()


def test_cv_summary_scores_each_case_once(cv_root, brats_root, capsys):
    assert main(["cv-summary", str(cv_root)]) == 0
    printed = capsys.readouterr().out
    result = json.loads((cv_root / "cv_summary.json").read_text())
    assert sorted(result["cases"]) == ["case0", "case1", "case2"]
    splits = json.loads((cv_root / "splits.json").read_text())
    assert result["folds"] == {c: k for k, s in enumerate(splits) for c in s["val"]}
    case, fold = "case1", result["folds"]["case1"]
    direct = evaluate(cv_root / f"fold_{fold}/validation/{case}.nii.gz", brats_root / case / f"{case}_seg.nii.gz")
    assert result["cases"][case] == next(iter(direct["cases"].values()))  # medseg evaluate's numbers
    wt = [result["cases"][c]["wt"]["dice"] for c in result["cases"]]
    assert result["summary"]["wt"]["dice"]["mean"] == pytest.approx(np.mean(wt))
    assert result["summary"]["wt"]["dice"]["sd"] == pytest.approx(np.std(wt, ddof=1))
    assert len((cv_root / "cv_summary.csv").read_text().strip().splitlines()) == 1 + 3 * 3
    assert f"wt: dice {np.mean(wt):.3f} ± {np.std(wt, ddof=1):.3f}" in printed


def test_find_best_picks_the_top_candidate_and_its_command_runs(cv_root, cv_root2, data, tmp_path, capsys):
    out = tmp_path / "inference.json"
    assert main(["find-best", str(cv_root), str(cv_root2), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    candidates = result["candidates"]
    assert len(candidates) == 6  # 2 configurations + their pair, each with and without keep-largest
    assert result["best"]["mean_dice"] == max(c["mean_dice"] for c in candidates)
    alone = next(c for c in candidates if c["models"] == [str(cv_root)] and not c["keep_largest"])
    assert main(["cv-summary", str(cv_root)]) == 0
    assert alone["mean_dice"] == pytest.approx(json.loads((cv_root / "cv_summary.json").read_text())["mean_dice"])
    command = result["command"]
    assert command in printed and command.startswith("medseg predict INPUT --model ")
    args = command.split()[2:]
    args[args.index("INPUT")] = str(data["unseen"])
    args[args.index("OUTPUT")] = str(tmp_path / "best.nii.gz")
    assert predict(*args) == 0 and (tmp_path / "best.nii.gz").is_file()


def test_cv_summary_names_missing_folds(cv_root, tmp_path, capsys):
    partial = tmp_path / "partial"
    shutil.copytree(cv_root, partial)
    (partial / "fold_2/validation.json").unlink()
    assert main(["cv-summary", str(partial)]) == 2
    assert "fold(s) [2] have no out-of-fold predictions" in capsys.readouterr().err


def test_members_and_their_spread_for_quality_control(cv_root, data):
    ensemble = load_predictor(str(cv_root), device="cpu")
    files = sorted(str(p) for p in data["unseen"].iterdir())
    mean, members = ensemble.predict_members(files)
    assert len(members) == FOLDS
    assert np.abs(mean.probabilities - np.mean(members, axis=0)).max() <= 1e-6
    assert np.array_equal(ensemble.predict_case(files).probabilities, mean.probabilities)
    std = spread(members)
    assert std.shape == mean.probabilities.shape and std.max() > 0
    assert np.allclose(std, np.std(members, axis=0), atol=1e-6)
