"""The table of docs/cross-validation.md: single model vs fold ensemble vs TTA vs both, Dice and seconds per case.

    OMP_NUM_THREADS=1 python experiments/cv_table.py ../shared/data runs/cv_table [--minutes 5] [--folds 3]

A K-fold cross-validation of the bundled recipe (configs/brats.yaml, FLAIR + T1ce, labels read as brats2013) over
the shared cases except the two DeepMedic test patients, `--minutes` of training per fold (no validation during
training: the fold's model is its final state). Out-of-fold Dice of the single models comes from cv-summary; a fold
ensemble has no out-of-fold score (every case was trained on by K-1 of its members), so all four variants are also
scored on the two held-out patients. Seconds per case are wall time of Predictor/Ensemble.predict_case plus the
mask, on whatever threads torch has. Writes <out>/table.json and <out>/table.md.
"""

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import torch

from medseg.data.conversion.brats import cases
from medseg.evaluation.cv import cv_summary, mean_dice
from medseg.evaluation.evaluate import read_label, spacing_of
from medseg.evaluation.metrics import evaluate_case
from medseg.inference.ensemble import load_predictor

REPO = Path(__file__).resolve().parents[1]

HELD_OUT = ["brats_2013_pat0001_1", "brats_2013_pat0002_1"]
CONVENTION = "brats2013"


def train(shared: Path, out: Path, folds: int, minutes: float) -> Path:
    every = cases(shared.resolve())
    datalist = out / "cv_datalist.json"
    out.mkdir(parents=True, exist_ok=True)
    datalist.write_text(json.dumps({"training": [c for c in every if c["case"] not in HELD_OUT]}, indent=1))
    root = out / "cv"
    if all((root / f"fold_{k}" / "validation.json").is_file() for k in range(folds)):
        return root
    subprocess.run(["medseg", "train", "--config", str(REPO / "configs/brats.yaml"), f"--data.datalist={datalist}",
                    "--data.modalities=[flair, t1ce]", f"--data.label_convention={CONVENTION}",
                    f"--cv.folds={folds}", f"--trainer.default_root_dir={root}", "--trainer.max_steps=-1",
                    f"--trainer.max_time=00:00:{int(minutes):02d}:{int(minutes % 1 * 60):02d}",
                    "--trainer.limit_val_batches=0", "--trainer.logger=false", "--trainer.enable_progress_bar=false"],
                   check=True)
    return root


def score(model: str, tta: bool, held_out: list[dict]) -> dict:
    """Mean Dice per region over the held-out cases, and seconds per case."""
    predictor = load_predictor(model, tta=tta, device="cpu")
    per_case, seconds = {}, []
    for case in held_out:
        start = time.perf_counter()
        prediction = predictor.predict_case(case["image"])
        labels = predictor.labels(prediction)
        seconds.append(time.perf_counter() - start)
        truth = read_label(Path(case["label"]), CONVENTION)
        per_case[case["case"]] = evaluate_case(labels, truth.array, CONVENTION, spacing_of(truth))
    regions = next(iter(per_case.values()))
    return {"dice": {r: statistics.fmean(c[r]["dice"] for c in per_case.values()) for r in regions},
            **mean_dice(per_case), "seconds_per_case": statistics.fmean(seconds), "cases": per_case}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shared", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=5.0, help="training time per fold")
    parser.add_argument("--held-out", nargs="+", default=HELD_OUT, choices=HELD_OUT,
                        help="the held-out patients to score (default: both)")
    args = parser.parse_args()
    root = train(args.shared, args.out, args.folds, args.minutes)
    oof = cv_summary(root)
    held_out = [c for c in cases(args.shared.resolve()) if c["case"] in args.held_out]
    folds = [str(root / f"fold_{k}" / "checkpoints" / "best.ckpt") for k in range(args.folds)]
    rows = {}
    for name, models, tta in ((f"single (mean of {args.folds} fold models)", folds, False),
                              ("single (fold 0)", folds[:1], False), ("ensemble", [str(root)], False),
                              ("single + TTA (fold 0)", folds[:1], True), ("ensemble + TTA", [str(root)], True)):
        runs = [score(m, tta, held_out) for m in models]
        rows[name] = {"held_out_mean_dice": statistics.fmean(r["mean_dice"] for r in runs),
                      "held_out_dice": {g: statistics.fmean(r["dice"][g] for r in runs) for g in runs[0]["dice"]},
                      "seconds_per_case": statistics.fmean(r["seconds_per_case"] for r in runs), "runs": runs}
    single_oof = {"mean_dice": oof["mean_dice"], "sd_dice": oof["sd_dice"], "cases": len(oof["cases"])}
    result = {"folds": args.folds, "minutes_per_fold": args.minutes, "threads": torch.get_num_threads(),
              "held_out": args.held_out, "out_of_fold_single": single_oof, "rows": rows}
    (args.out / "table.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| variant | out-of-fold mean Dice | held-out WT / TC / ET | held-out mean Dice | s/case |",
             "|---|---|---|---|---|"]
    for name, row in rows.items():
        oof_cell = "n/a (members saw the cases)" if name.startswith("ensemble") else "not run"
        if name.startswith("single (mean"):
            oof_cell = f"{oof['mean_dice']:.3f} ± {oof['sd_dice']:.3f} ({len(oof['cases'])} cases)"
        dice = " / ".join(f"{v:.3f}" for v in row["held_out_dice"].values())
        lines.append(f"| {name} | {oof_cell} | {dice} | {row['held_out_mean_dice']:.3f} | "
                     f"{row['seconds_per_case']:.1f} |")
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
