"""`medseg demo`: train a small model on the bundled BraTS sample, segment the held-out case, print its Dice."""

from pathlib import Path

import nibabel as nib
import numpy as np

from medseg import resources
from medseg.data.io import write_mask
from medseg.evaluation.metrics import evaluate_case
from medseg.inference.predictor import Predictor
from medseg.training.cli import train


def duration(minutes: float) -> str:
    """Minutes as Lightning's DD:HH:MM:SS."""
    seconds = round(minutes * 60)
    return f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def demo(output: str, minutes: float) -> int:
    sample, out = resources.sample(), Path(output)
    heldout = next((sample / "heldout").iterdir())
    run = out / "run"
    print(f"training for {minutes:g} min on {sample / 'train'} (progress below), then segmenting {heldout.name}")
    train(["--config", str(resources.recipes() / "brats.yaml"), f"--data.root={sample / 'train'}",
           "--data.modalities=[flair, t1ce]", "--data.label_convention=brats2013", "--trainer.logger=false",
           f"--trainer.default_root_dir={run}", f"--trainer.max_time={duration(minutes)}", "--trainer.max_epochs=-1"])
    predictor = Predictor(run / "checkpoints" / "best.ckpt")
    prediction = predictor.predict_case([str(f) for f in sorted(heldout.iterdir()) if "_seg" not in f.name])
    mask = out / f"{heldout.name}_pred.nii.gz"
    labels = predictor.labels(prediction)
    write_mask(labels, prediction.reference, mask)
    truth = np.asarray(nib.load(next(heldout.glob("*_seg.nii.gz"))).dataobj)
    scores = {r: m["dice"] for r, m in evaluate_case(labels, truth, "brats2013").items()}
    print("held-out Dice: " + ", ".join(f"{k.upper()} {v:.3f}" for k, v in scores.items()))
    print(f"mask: {mask.resolve()}")
    return 0
