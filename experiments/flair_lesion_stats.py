"""FLAIR statistics behind the bundled brats model's postprocessing (medseg.inference.postprocess,
docs/robustness.md): how FLAIR-hyperintense the reference lesions are, and what a prediction paints elsewhere.

    python -m medseg.data.conversion.brats ../shared/data runs/e28/all.json --heldout
    python experiments/flair_lesion_stats.py runs/e28/all.json [--predictions CASE=MASK.nii.gz ...]

Per case (z: FLAIR z-scored over the brain, as the postprocessing does): the reference whole tumour's 50th/75th
FLAIR percentile, the same for a 4-voxel shell under the brain surface away from the tumour (cortex), the share of
the reference whole tumour that is edema darker than the brain mean (what the edema rule would remove from a
perfect prediction) and the enhancing tumour's 25th percentile. With --predictions: every 26-connected predicted
lesion with its size, overlap with the reference and FLAIR 50th/75th percentile.
"""

import argparse
import json

import nibabel as nib
import numpy as np
from scipy import ndimage

from medseg.inference.postprocess import EDEMA_FLAIR_Z, FLAIR_QUANTILE, brain_z

SHELL_VOXELS = 4


def case_row(flair: np.ndarray, seg: np.ndarray) -> dict:
    z = brain_z(flair)
    brain = flair > flair.min()
    wt = seg > 0
    shell = brain & ~ndimage.binary_erosion(brain, iterations=SHELL_VOXELS)
    shell &= ~ndimage.binary_dilation(wt, iterations=5)
    q = FLAIR_QUANTILE
    return {"wt_p50": np.percentile(z[wt], 50), f"wt_p{q}": np.percentile(z[wt], q),
            "cortex_p50": np.percentile(z[shell], 50), f"cortex_p{q}": np.percentile(z[shell], q),
            "dark_edema_share_of_wt": float(((seg == 2) & (z < EDEMA_FLAIR_Z)).sum() / wt.sum()),
            "et_p25": np.percentile(z[seg == 4], 25) if (seg == 4).any() else float("nan")}


def lesions(pred: np.ndarray, seg: np.ndarray, z: np.ndarray) -> list[dict]:
    components, count = ndimage.label(pred > 0, structure=np.ones((3, 3, 3)))
    rows = []
    for i in range(1, count + 1):
        m = components == i
        rows.append({"voxels": int(m.sum()), "on_reference": float(seg[m].astype(bool).mean()),
                     "p50": float(np.percentile(z[m], 50)),
                     f"p{FLAIR_QUANTILE}": float(np.percentile(z[m], FLAIR_QUANTILE))})
    return sorted(rows, key=lambda r: -r["voxels"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datalist", help="MSD-style JSON of the shared cases, FLAIR first (data.conversion.brats)")
    parser.add_argument("--predictions", nargs="*", default=[], metavar="CASE=MASK")
    args = parser.parse_args()
    spec = json.loads(open(args.datalist).read())
    cases = {e["case"]: e for e in spec["training"] + spec.get("validation", [])}
    q = FLAIR_QUANTILE
    print(f"| case | WT p50 | WT p{q} | cortex p50 | cortex p{q} | FLAIR-dark edema, % of WT | ET p25 |")
    print("|---|---|---|---|---|---|---|")
    for name, entry in cases.items():
        r = case_row(nib.load(entry["image"][0]).get_fdata(), nib.load(entry["label"]).get_fdata())
        values = " | ".join(f"{v * 100:.1f}" if k.startswith("dark") else f"{v:.2f}" for k, v in r.items())
        print(f"| {name} | {values} |")
    for item in args.predictions:
        name, path = item.split("=", 1)
        entry = cases[name]
        flair, seg = nib.load(entry["image"][0]).get_fdata(), nib.load(entry["label"]).get_fdata()
        print(f"\n{path} ({name}): predicted lesions, largest first")
        for row in lesions(np.asarray(nib.load(path).dataobj), seg, brain_z(flair))[:8]:
            print("  " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
