"""Deep supervision trained: the loss falls on a tiny batch, a CLI-trained checkpoint predicts, a too shallow net is
a clear error."""

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.cli import main
from medseg.errors import MedsegError
from medseg.training.module import SegModule
from tests.conftest import REPO, synthetic_case, train_tiny
from tests.unit.test_deep_supervision import module

DS_ARGS = ["--model.deep_supervision=true", "--model.channels=[4,8,8,8]", "--model.strides=[1,2,2,2]",
           "--model.kernel_sizes=[3,3,3,3]"]


def test_trained_checkpoint_predicts(brats_root, tmp_path):
    ckpt = train_tiny(brats_root, tmp_path / "run", *DS_ARGS, "--trainer.max_steps=3") / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert any(k.startswith("aux_heads.") for k in saved["state_dict"])  # training resumes with its heads
    assert "deep_supervision" not in saved["medseg"]["net"]  # predict builds the plain net
    case = brats_root / "case0"
    out = tmp_path / "mask.nii.gz"
    assert main(["predict", str(case), "--model", str(ckpt), "--output", str(out)]) == 0
    assert nib.load(out).shape == nib.load(case / "case0_flair.nii.gz").shape


def test_too_shallow_net_is_a_clear_error(brats_root, tmp_path, capsys):
    with pytest.raises(MedsegError, match="at least 4 stages"):
        SegModule(["flair", "t1ce"], "brats2021", deep_supervision=True, channels=[4, 8, 16], strides=[1, 2, 2],
                  kernel_sizes=[3, 3, 3])
    rc = main(["train", "--config", str(REPO / "configs/brats.yaml"), f"--data.root={brats_root}",
               "--data.modalities=[flair, t1ce]",
               "--model.channels=[4,8]", "--model.strides=[1,2]", "--model.kernel_sizes=[3,3]",
               "--model.deep_supervision=true", "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}"])
    assert rc == 2
    assert "error: model.deep_supervision: needs at least 4 stages" in capsys.readouterr().err


def test_loss_decreases_on_a_tiny_batch():
    torch.manual_seed(0)
    m = module()
    channels, label = synthetic_case(0, shape=(32, 32, 32))
    x = torch.from_numpy(np.stack([channels["flair"], channels["t1ce"]]))[None] / 100  # (1, 2, 32, 32, 32)
    y = torch.from_numpy(m.convention.to_regions(label[None])).float()[None]  # (1, 3, 32, 32, 32)
    optimizer = torch.optim.AdamW(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = m.loss(m.training_outputs(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1
    assert all(h.weight.grad is not None and h.weight.grad.abs().sum() > 0 for h in m.aux_heads)
