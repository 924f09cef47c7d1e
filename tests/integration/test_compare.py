"""experiments/compare_blocks.py --quick on synthetic cases: the table, its files, and resuming a cut-short table."""

import csv
import json
import runpy
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import pytest
from PIL import Image

from tests.conftest import write_case

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "compare_blocks.py"


def compare(argv: list[str]) -> int:
    """The experiment as users run it: `python experiments/compare_blocks.py …` (experiments/ is not a package)."""
    return subprocess.run([sys.executable, str(SCRIPT), *argv], timeout=900).returncode


def variant_args(name: str) -> list[str]:
    return runpy.run_path(str(SCRIPT))["variant_args"](name)


def test_quick_table_resumes_and_reports(tmp_path):
    cases = tmp_path / "cases"
    spec = {"training": [], "validation": []}
    for i in range(3):
        d = write_case(cases, f"case{i}", seed=i)
        entry = {"image": [str(d / f"case{i}_{m}.nii.gz") for m in ("flair", "t1ce")],
                 "label": str(d / f"case{i}_seg.nii.gz"), "case": f"case{i}"}
        spec["validation" if i == 2 else "training"].append(entry)
    datalist = tmp_path / "cases.json"
    datalist.write_text(json.dumps(spec))
    out = tmp_path / "compare"
    common = ["--datalist", str(datalist), "--out", str(out), "--quick", "--jobs", "2", "--set=--data.spacing=null"]

    assert compare([*common, "--variants", "unet-conv", "unet-sic", "--seeds", "0", "1", "--budgets", "steps"]) == 0
    done = out / "runs" / "steps" / "unet-conv" / "seed0" / "result.json"
    before = done.stat().st_mtime_ns
    # a second call with one more budget runs only what is missing
    assert compare([*common, "--variants", "unet-conv", "--seeds", "0", "--budgets", "steps", "time"]) == 0
    assert done.stat().st_mtime_ns == before

    results = json.loads((out / "results.json").read_text())
    runs = results["runs"]
    assert sorted((r["budget"], r["variant"], r["seed"]) for r in runs) == [
        ("steps", "unet-conv", 0), ("steps", "unet-conv", 1), ("steps", "unet-sic", 0), ("steps", "unet-sic", 1),
        ("time", "unet-conv", 0)]
    for r in runs:
        assert set(r["cases"]) == {"case2"}
        assert all(0 <= r["dice"][k] <= 1 for k in ("wt", "tc", "et"))
        assert r["train_s"] > 0 and r["predict_s"] > 0 and r["flops"] > 0
    assert {r["steps"] for r in runs if r["budget"] == "steps"} == {4}
    summary = {(r["budget"], r["variant"]): r for r in results["summary"]}
    conv, sic = summary["steps", "unet-conv"], summary["steps", "unet-sic"]
    assert sic["params"] < conv["params"] and sic["gflop"] < conv["gflop"]
    assert conv["dice_wt_sd"] is not None and summary["time", "unet-conv"]["dice_wt_sd"] is None  # 2 seeds vs 1
    seed_means = [r["dice"]["wt"] for r in runs if (r["budget"], r["variant"]) == ("steps", "unet-conv")]
    assert abs(conv["dice_wt"] - sum(seed_means) / 2) < 1e-9

    pred = out / "runs" / "steps" / "unet-sic" / "seed1" / "pred" / "case2.nii.gz"
    assert nib.load(pred).shape == nib.load(cases / "case2" / "case2_flair.nii.gz").shape  # native grid
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 3
    table = (out / "table.md").read_text()
    assert "| steps | unet-sic |" in table and " ± " in table and "seeds [0, 1]" in table
    assert Image.open(out / "dice_vs_cost.png").size[0] > 300


def test_variant_names_combine_ablations():
    assert variant_args("unet-pmscn+nnunet-aug+deep-sup") == [
        "--model.arch=unet", "--model.block=pmscn", "--data.augmentation=nnunet", "--model.deep_supervision=true"]
    assert variant_args("densenet-sic") == ["--model.arch=densenet", "--model.block=sic"]
    assert variant_args("unet-pmscn+inner-act")[-1] == "--model.block_kwargs={inner_act: true}"
    with pytest.raises(SystemExit, match="unknown variant 'unet-conv\\+deep-sup\\+mixup'"):
        variant_args("unet-conv+deep-sup+mixup")
