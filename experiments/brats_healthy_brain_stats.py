"""Why normal brain is painted on scans with small tumours: what removing the tumour does to the z-score's statistics,
and whether normalising a tumour-free brain with its tumour-bearing original's statistics stops the painting.

    python experiments/brats_healthy_brain_stats.py runs/robust/brats7.json [--model medseg/models/brats.pt]

For every case of the datalist (images in the model's channel order + label) the healthier hemisphere is mirrored
over the other (medseg.evaluation.robustness.healthy_mirror), and the brain's mean / sd and median / IQR of each
channel are compared with the original's. With --model, the held-out case (--case) is predicted twice as a
tumour-free brain: z-scored by its own statistics and by those of the original brain (numbers in docs/robustness.md).
"""

import argparse
import json

import nibabel as nib
import numpy as np
import torch
from monai import transforms as T
from monai.data import MetaTensor

from medseg.evaluation.robustness import healthy_mirror
from medseg.inference.postprocess import largest_component
from medseg.inference.predictor import Predictor


def load(case: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    label_img = nib.load(case["label"])
    image = np.stack([nib.load(f).get_fdata(dtype=np.float32) for f in case["image"]])
    image = image - image.min(axis=(1, 2, 3), keepdims=True)
    return image, np.asarray(label_img.dataobj).astype(np.int32), (image != 0).any(0), label_img.affine


def stats_table(cases: list[dict]) -> None:
    print("| case | tumour % of brain | channel | sd ratio | mean shift (sd) | IQR ratio | median shift (IQR) |")
    print("|---|---|---|---|---|---|---|")
    for case in cases:
        image, label, brain, affine = load(case)
        mirrored, _, _ = healthy_mirror(image, label, brain, affine)
        for ch in range(image.shape[0]):
            a, b = image[ch][image[ch] != 0], mirrored[ch][mirrored[ch] != 0]
            qa, qb = np.percentile(a, [25, 50, 75]), np.percentile(b, [25, 50, 75])
            print(f"| {case['case']} | {100 * (label > 0).sum() / brain.sum():.0f} | {ch} | {b.std() / a.std():.2f} | "
                  f"{(b.mean() - a.mean()) / a.std():+.2f} | {(qb[2] - qb[0]) / (qa[2] - qa[0]):.2f} | "
                  f"{(qb[1] - qa[1]) / (qa[2] - qa[0]):+.2f} |")


def prediction_check(model: str, case: dict) -> None:
    predictor = Predictor(model, device="cpu")
    image, label, brain, affine = load(case)
    mirrored, _, _ = healthy_mirror(image, label, brain, affine)
    steps = predictor.plan.preprocessing()
    original = T.Compose(steps[:-1])({"image": MetaTensor(torch.from_numpy(image), affine=affine)})["image"]
    mean = [float(c[c != 0].mean()) for c in original]
    sd = [float(c[c != 0].std()) for c in original]
    own = T.Compose(steps)
    fixed = T.Compose([*steps[:-1], T.NormalizeIntensityd("image", subtrahend=mean, divisor=sd, nonzero=True,
                                                          channel_wise=True)])
    for name, chain in [("its own z-score", own), ("the original brain's z-score", fixed)]:
        predictor.preprocess = chain
        p = predictor.probabilities(MetaTensor(torch.from_numpy(mirrored), affine=affine), case["label"])
        labels = predictor.plan.convention.from_regions((p > 0.5).astype(np.uint8))
        print(f"tumour-free {case['case']}, {name}: whole tumour {(p[0] > 0.5).sum() / 1000:.1f} mL, "
              f"{(largest_component(labels) > 0).sum() / 1000:.1f} mL after keep-largest")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datalist")
    parser.add_argument("--model")
    parser.add_argument("--case", default="brats_2013_pat0001_1")
    args = parser.parse_args()
    spec = json.load(open(args.datalist))
    cases = spec["training"] + [c for c in spec.get("validation", []) if c not in spec["training"]]
    stats_table(cases)
    if args.model:
        prediction_check(args.model, next(c for c in cases if c["case"] == args.case))


if __name__ == "__main__":
    main()
