"""DenseNet3D trained and used for prediction through the CLI."""

import nibabel as nib
import torch

from medseg.cli import main
from tests.conftest import train_tiny


def test_densenet_trains_and_predicts_through_the_cli(brats_root, tmp_path):
    ckpts = train_tiny(brats_root, tmp_path / "run", "--model.arch=densenet", "--trainer.max_steps=2")
    ckpt = ckpts / "best.ckpt"
    meta = torch.load(ckpt, map_location="cpu", weights_only=True)["medseg"]
    assert meta["arch"] == "densenet"
    case, out = brats_root / "case2", tmp_path / "mask.nii.gz"
    assert main(["predict", str(case), "--model", str(ckpt), "--output", str(out), "--device", "cpu"]) == 0
    assert nib.load(out).shape == nib.load(case / "case2_flair.nii.gz").shape
