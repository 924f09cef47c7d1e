"""Out-of-fold table of the brats recipes (docs/robustness.md, "Every case held out once"): gathers the
`medseg robustness` JSON that experiments/brats_recipes_heldout.sh wrote for each split into one row per held-out
case, so every shared case is scored by models that never saw it.

    python experiments/brats_oof_table.py ho2n ho35 ho246            # seed 0, the three splits of the 7 cases

Cells: WT Dice / whole tumour predicted more than 5 voxels from the reference (mL); "tumour-free": the far false
positives on the healthy-hemisphere mirror. Models: the earlier recipe (`base`) and the mirror recipe without
postprocessing and with the FLAIR check + keep-largest, and their ensemble with the FLAIR check, without and with
keep-largest. The last row is the mean over the cases; a second table gives each model's mean WT / TC / ET Dice
unperturbed, and WT Dice and far false positives under the bias field.
"""

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).parent / "robustness_results"
MODELS = [("earlier, none", "base", "none"), ("earlier, FLAIR + largest", "base", "flair-largest"),
          ("mirror, none", "mirror", "none"), ("mirror, FLAIR + largest", "mirror", "flair-largest"),
          ("ensemble, FLAIR only", "ensemble", "flair-only"),
          ("ensemble, FLAIR + largest (shipped)", "ensemble", "flair-largest")]
TUMOUR_FREE = "healthy hemisphere mirrored"


def load(tag: str, recipe: str, seed: int, post: str) -> dict:
    """{case: {perturbation: scores}} of one split's run."""
    return json.loads((RESULTS / f"{tag}-{recipe}-s{seed}-{post}.json").read_text())["cases"]


def cell(scores: dict) -> tuple[float, float, float]:
    """(WT Dice, far false positives in mL, tumour-free far false positives in mL) of one case."""
    return scores["none"]["dice_wt"], scores["none"]["wt_far_fp_ml"], scores[TUMOUR_FREE]["wt_far_fp_ml"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tags", nargs="+", help="split tags of brats_recipes_heldout.sh (TAG=...)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows: dict[str, list[tuple[float, float, float]]] = {}
    scores: list[list[dict]] = [[] for _ in MODELS]  # per model: every held-out case's scores
    for tag in args.tags:
        runs = [load(tag, recipe, args.seed, post) for _, recipe, post in MODELS]
        for case in runs[0]:
            rows[f"{case} ({tag})"] = [cell(run[case]) for run in runs]
            for model, run in zip(scores, runs, strict=True):
                model.append(run[case])
    print("| held-out case | " + " | ".join(name for name, _, _ in MODELS) + " |")
    print("|---" * (len(MODELS) + 1) + "|")
    for case, cells in rows.items():
        print(f"| {case} | " + " | ".join(f"{d:.2f} / {f:.1f} / {t:.1f}" for d, f, t in cells) + " |")
    columns = zip(*rows.values(), strict=True)  # one column of (dice, far, tumour-free) cells per model
    means = [[sum(values) / len(rows) for values in zip(*column, strict=True)] for column in columns]
    print(f"| **mean of {len(rows)}** | "
          + " | ".join(f"**{d:.3f}** / {f:.1f} / {t:.1f}" for d, f, t in means) + " |")
    print("\n| model | WT | TC | ET | bias field 0.3: WT / far (mL) |\n|---|---|---|---|---|")
    for (name, _, _), cases in zip(MODELS, scores, strict=True):
        mean = {key: sum(c["none"][key] for c in cases) / len(cases) for key in ("dice_wt", "dice_tc", "dice_et")}
        bias = [sum(c["bias field 0.3"][key] for c in cases) / len(cases) for key in ("dice_wt", "wt_far_fp_ml")]
        print(f"| {name} | {mean['dice_wt']:.3f} | {mean['dice_tc']:.3f} | {mean['dice_et']:.3f} | "
              f"{bias[0]:.3f} / {bias[1]:.1f} |")


if __name__ == "__main__":
    main()
