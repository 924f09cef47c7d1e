"""Does keeping only the largest lesion help? Re-score the held-out masks of a block-comparison table with and
without `medseg predict --keep-largest` (the postprocessing the bundled brats model ships with).

    python experiments/keep_largest_check.py runs/compare-300 --shared ../shared/data

Reads every <table>/runs/<budget>/<variant>/seed<k>/pred/<case>.nii.gz written by experiments/compare_blocks.py, keeps
the largest 26-connected foreground component (medseg.inference.postprocess.largest_component, the code predict
runs) and prints per-mask Dice WT/TC/ET before and after, then the mean change and how many masks got worse: the
evidence nnU-Net also uses to decide this postprocessing (on held-out predictions, per dataset).
"""

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medseg.data.conversion.brats import cases as shared_cases  # noqa: E402
from medseg.evaluation.metrics import evaluate_case  # noqa: E402
from medseg.inference.postprocess import largest_component  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", type=Path, help="the --out folder of experiments/compare_blocks.py")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    truth = {c["case"]: c["label"] for c in shared_cases(args.shared)}
    masks = sorted(args.table.glob("runs/*/*/seed*/pred/*.nii.gz"))
    if not masks:
        sys.exit(f"error: {args.table}: no predicted masks under runs/*/*/seed*/pred/")
    regions = ("wt", "tc", "et")
    print("| run | case | Dice WT | TC | ET | largest only: WT | TC | ET |\n|---|---|---:|---:|---:|---:|---:|---:|")
    changes = []
    for mask in masks:
        case = mask.name.removesuffix(".nii.gz")
        pred, gt = (np.asarray(nib.load(p).dataobj) for p in (mask, truth[case]))
        before, after = (evaluate_case(p, gt, "brats2013") for p in (pred, largest_component(pred)))
        changes.append([after[r]["dice"] - before[r]["dice"] for r in regions])
        run = "/".join(mask.parts[-5:-2])
        print(f"| {run} | {case} | " + " | ".join(f"{before[r]['dice']:.3f}" for r in regions) + " | "
              + " | ".join(f"{after[r]['dice']:.3f}" for r in regions) + " |")
    d = np.array(changes)  # (masks, regions)
    print(f"\n{len(masks)} masks. Mean change WT {d[:, 0].mean():+.4f}, TC {d[:, 1].mean():+.4f}, "
          f"ET {d[:, 2].mean():+.4f}; worse (< -0.001): WT {(d[:, 0] < -1e-3).sum()}, TC {(d[:, 1] < -1e-3).sum()}, "
          f"ET {(d[:, 2] < -1e-3).sum()}; largest WT gain {d[:, 0].max():+.3f}")


if __name__ == "__main__":
    main()
