"""What did not work (docs/robustness.md): N4 bias-field correction at prediction time only. Every perturbed input
of `medseg robustness` is corrected with SimpleITK's N4 (per channel, over the brain, fitted at 1/4 resolution)
before the model and the FLAIR check see it; scored as the FLAIR check + keep-largest runs.

    python experiments/n4_test_time.py runs/e28/base-ho246-s0/run/checkpoints/last.ckpt \
        experiments/robustness_results/n4-test-time-ho246-base-s0.json \
        brats_2013_pat0002_1 brats_2013_pat0004_1 brats_2013_pat0006_1
"""

import json
import sys

import numpy as np
import SimpleITK as sitk

import medseg.evaluation.robustness as robustness

SHRINK = 4


def n4(channel: np.ndarray) -> np.ndarray:
    """One (X, Y, Z) channel (background 0) divided by its N4 bias field, fitted on the brain at 1/SHRINK size."""
    image = sitk.GetImageFromArray(channel)
    brain = sitk.GetImageFromArray((channel > 0).astype(np.uint8))
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([50] * 4)
    corrector.Execute(sitk.Shrink(image, [SHRINK] * 3), sitk.Shrink(brain, [SHRINK] * 3))
    log_field = sitk.GetArrayFromImage(corrector.GetLogBiasFieldAsImage(image))
    return np.where(channel > 0, channel / np.exp(log_field), 0).astype(np.float32)


def main() -> None:
    model, out, *cases = sys.argv[1:]
    perturb = robustness.perturb

    def corrected(*args, **kwargs):
        image, label, within = perturb(*args, **kwargs)
        return np.stack([n4(c) for c in image]), label, within  # (C, X, Y, Z)

    robustness.perturb = corrected
    scores = robustness.robustness(model, "runs/e28/all.json", cases,
                                   ["none", "healthy hemisphere mirrored", "bias field 0.3"], device="cpu",
                                   keep_largest=True, lesion_flair_z=1.0)
    with open(out, "w") as f:
        json.dump({"command": "python experiments/n4_test_time.py " + " ".join(sys.argv[1:]), "cases": scores}, f,
                  indent=1)


if __name__ == "__main__":
    main()
