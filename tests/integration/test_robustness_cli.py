"""`medseg robustness` end to end: a real checkpoint (the oracle, whose mask is a known function of the input)
predicts perturbed versions of a labelled case through the model's own preprocessing, and the JSON holds scores."""

import json

from medseg.cli import main
from tests.conftest import write_case


def robustness(model: str, tmp_path) -> dict:
    """`medseg robustness` of `model` on one synthetic labelled case -> the case's scores per perturbation."""
    case = write_case(tmp_path, "case0", seed=0)
    datalist = tmp_path / "cases.json"
    entry = {"case": "case0", "image": [str(case / "case0_flair.nii.gz"), str(case / "case0_t1ce.nii.gz")],
             "label": str(case / "case0_seg.nii.gz")}
    datalist.write_text(json.dumps({"training": [entry]}))
    out = tmp_path / "scores.json"
    rc = main(["robustness", "--model", model, "--datalist", str(datalist), "--heldout", "case0",
               "--label-convention", "brats2021", "--perturbations", "none", "healthy hemisphere mirrored",
               "--output", str(out)])
    assert rc == 0
    return json.loads(out.read_text())["cases"]["case0"]


def test_robustness_scores_a_checkpoint_on_perturbed_cases(oracle, tmp_path, capsys):
    rows = robustness(str(oracle["native"]), tmp_path)
    assert rows["none"]["dice_wt"] > 0.8  # the oracle paints the synthetic lesion
    assert rows["none"]["wt_far_fp_ml"] < 0.2 * rows["none"]["wt_pred_ml"]
    mirrored = rows["healthy hemisphere mirrored"]
    assert mirrored["wt_ref_ml"] < rows["none"]["wt_ref_ml"]  # the mirror keeps the healthier half
    assert "| none |" in capsys.readouterr().out


def test_robustness_of_an_ensemble_is_scored_on_the_mean_of_its_members(oracle, tmp_path):
    """`--model a,b` (the bundled brats model is one): the same network twice scores exactly as the network."""
    single = robustness(str(oracle["native"]), tmp_path / "one")
    pair = robustness(f"{oracle['native']},{oracle['native']}", tmp_path / "two")
    for name in ("none", "healthy hemisphere mirrored"):
        assert pair[name]["dice_wt"] == single[name]["dice_wt"]
        assert pair[name]["wt_pred_ml"] == single[name]["wt_pred_ml"]
