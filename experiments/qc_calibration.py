"""How the QC score and flags relate to Dice: the bundled brats model on held-out cases and synthetic corruptions.

Cases: the two DeepMedic BraTS 2013 patients the bundled model never saw (pat0001, pat0002, 1 mm, in
../shared/data/deepmedic_brats2015_subset/test) and BraTS2021_00006 (../shared/data/brats2021_case00006, a
training case of the model, so its clean Dice is optimistic). Corruptions of each: FLAIR and T1ce declared the
wrong way round, Gaussian noise (SD 0.5 x the brain's SD), Gaussian blur (sigma 2 voxels), T1ce replaced by FLAIR
and FLAIR by T1ce (a missing modality filled with another), the volume upside down and with two axes transposed
(wrong orientation: the header kept, the voxels not), and a partial field of view (zero outside a 3 cm axial slab
through the tumour). The ground truth undergoes the same geometric change, so Dice measures the segmentation of
what the model was given. Everything runs on 1 CPU thread; `--tta CASE…` adds the 8-mirroring runs of the clean and
swapped inputs of those cases (the issue's check). Results: docs/report-qc.md.

    OMP_NUM_THREADS=1 python experiments/qc_calibration.py --cases pat0001 --clean-only pat0002 --tta pat0001 \
        --out experiments/results/qc_calibration_a.json
    OMP_NUM_THREADS=1 python experiments/qc_calibration.py --cases BraTS2021_00006 --tta BraTS2021_00006 \
        --out experiments/results/qc_calibration_b.json
    python experiments/qc_calibration.py --table experiments/results/qc_calibration_{a,b}.json
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from medseg.evaluation.metrics import prediction_regions
from medseg.inference.predictor import Predictor
from medseg.inference.qc import assess
from medseg.labels import get_convention

SHARED = Path(os.environ.get("MEDSEG_TEST_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
CASES = {  # name: (flair, t1ce, label, held out?)
    "pat0001": ("deepmedic_brats2015_subset/test/brats_2013_pat0001_1/Flair_subtrMeanDivStd.nii.gz",
                "deepmedic_brats2015_subset/test/brats_2013_pat0001_1/T1c_subtrMeanDivStd.nii.gz",
                "deepmedic_brats2015_subset/test/brats_2013_pat0001_1/OTMultiClass.nii.gz", True),
    "pat0002": ("deepmedic_brats2015_subset/test/brats_2013_pat0002_1/Flair_subtrMeanDivStd.nii.gz",
                "deepmedic_brats2015_subset/test/brats_2013_pat0002_1/T1c_subtrMeanDivStd.nii.gz",
                "deepmedic_brats2015_subset/test/brats_2013_pat0002_1/OTMultiClass.nii.gz", True),
    "BraTS2021_00006": ("brats2021_case00006/BraTS2021_00006_flair.nii.gz",
                        "brats2021_case00006/BraTS2021_00006_t1ce.nii.gz",
                        "brats2021_case00006/BraTS2021_00006_seg.nii.gz", False),
}


def corrupt(name: str, flair: np.ndarray, t1ce: np.ndarray, label: np.ndarray, rng: np.random.Generator):
    """(flair, t1ce, label, channel order as declared) after the corruption `name`."""
    brain = (flair != flair.min()) | (t1ce != t1ce.min())
    if name == "clean":
        return flair, t1ce, label, "flair,t1ce"
    if name == "swapped":
        return flair, t1ce, label, "t1ce,flair"  # the FLAIR file declared as T1ce and the T1ce file as FLAIR
    if name == "noise":
        noisy = [a + brain * rng.normal(0, 0.5 * a[brain].std(), a.shape).astype(np.float32) for a in (flair, t1ce)]
        return *noisy, label, "flair,t1ce"
    if name == "blur":
        return *(ndimage.gaussian_filter(a, 2.0) for a in (flair, t1ce)), label, "flair,t1ce"
    if name == "t1ce_is_flair":
        return flair, flair.copy(), label, "flair,t1ce"
    if name == "flair_is_t1ce":
        return t1ce.copy(), t1ce, label, "flair,t1ce"
    if name == "upside_down":
        return *(a[:, :, ::-1] for a in (flair, t1ce, label)), "flair,t1ce"
    if name == "transposed":
        return *(np.ascontiguousarray(np.swapaxes(a, 1, 2)) for a in (flair, t1ce, label)), "flair,t1ce"
    if name == "partial_fov":
        z = int(np.argwhere(label > 0)[:, 2].mean())
        keep = np.zeros(label.shape, bool)
        keep[:, :, max(z - 15, 0):z + 15] = True
        return *(np.where(keep, a, a.min()) for a in (flair, t1ce)), label * keep, "flair,t1ce"
    raise ValueError(name)


CORRUPTIONS = ("clean", "swapped", "noise", "blur", "t1ce_is_flair", "flair_is_t1ce", "upside_down", "transposed",
               "partial_fov")


def dice(pred: np.ndarray, truth: np.ndarray, convention: str) -> dict[str, float]:
    conv = get_convention(convention)
    p, t = prediction_regions(pred, conv), prediction_regions(truth, conv)
    return {r: float(2 * (p[r] & t[r]).sum() / max(p[r].sum() + t[r].sum(), 1)) for r in p}


def run(predictor: Predictor, case: str, corruption: str, tmp: Path, rng: np.random.Generator) -> dict:
    flair_f, t1ce_f, label_f, held_out = CASES[case]
    ref = nib.load(SHARED / flair_f)
    arrays = [np.asarray(nib.load(SHARED / f).dataobj, dtype=np.float32) for f in (flair_f, t1ce_f)]
    label = np.asarray(nib.load(SHARED / label_f).dataobj).round().astype(np.uint8)
    flair, t1ce, label, order = corrupt(corruption, *arrays, label, rng)
    files = []
    for i, a in enumerate((flair, t1ce)):
        files.append(str(tmp / f"{case}_run{i}.nii.gz"))  # neutral names: --channels alone says which is which
        nib.save(nib.Nifti1Image(np.ascontiguousarray(a, dtype=np.float32), ref.affine, ref.header), files[-1])
    start = time.perf_counter()
    prediction = predictor.predict_case(files, order.split(","), qc=True)
    labels = predictor.labels(prediction)
    qc = assess(prediction.network_image, prediction.members, prediction.spacing, predictor.plan.regions,
                predictor.plan.modalities, predictor.fingerprint, int(np.count_nonzero(labels)))
    details = qc["details"]
    return {"case": case, "held_out": held_out, "corruption": corruption, "tta": predictor.tta,
            "score": qc["score"], "flags": qc["flags"], "dice": dice(labels, label, predictor.plan.label_convention),
            "intensity_shift": details.get("intensity_shift"), "brain_shape_shift": details.get("brain_shape_shift"),
            "symmetry_dice": details["symmetry_dice"], "outside_brain_fraction": details["outside_brain_fraction"],
            "edge_faces": details["edge_faces"], "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="experiments/results/qc_calibration.json")
    parser.add_argument("--tta", nargs="*", default=[], metavar="CASE",
                        help="also the 8-mirroring runs of clean and swapped inputs of these cases")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--clean-only", nargs="*", default=[], metavar="CASE",
                        help="cases run clean and swapped only (to keep the run short)")
    parser.add_argument("--table", nargs="+", metavar="JSON", help="print the Markdown table of earlier runs instead")
    args = parser.parse_args()
    if args.table:
        print(table([row for f in args.table for row in json.loads(Path(f).read_text())]))
        return
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    plain = Predictor("brats", device="cpu")
    plans = [(plain, c, k) for c in args.cases for k in CORRUPTIONS]
    plans += [(plain, c, k) for c in args.clean_only for k in ("clean", "swapped")]
    if args.tta:
        tta = Predictor("brats", device="cpu", tta=True)
        plans += [(tta, c, k) for c in args.tta for k in ("clean", "swapped")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for predictor, case, corruption in plans:
            rows.append(run(predictor, case, corruption, Path(tmp), rng))
            r = rows[-1]
            print(f"{case:16} {corruption:14} tta={int(r['tta'])} score {r['score']:.3f} dice "
                  + " ".join(f"{k} {v:.2f}" for k, v in r["dice"].items()) + f" flags {','.join(r['flags'])}",
                  flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")  # after every run: partial results kept
    print(f"wrote {args.out}")


def table(rows: list[dict]) -> str:
    """The docs' table: one row per run, with the numbers behind the flags."""
    lines = ["| case | input | members | QC score | Dice WT / TC / ET | flags | histogram / lesion shift (SD) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        shift = r["intensity_shift"]
        shifts = f"{shift['histogram']:.1f} / {shift['lesion_contrast']:.1f}" if isinstance(shift, dict) else ""
        held = "" if r["held_out"] else " (trained on)"
        lines.append(f"| {r['case']}{held} | {r['corruption']} | {'8' if r['tta'] else '2'} | {r['score']:.3f} | "
                     + " / ".join(f"{v:.2f}" for v in r["dice"].values())
                     + f" | {', '.join(r['flags']) or '–'} | {shifts} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
