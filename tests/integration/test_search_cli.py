"""`medseg search` through the CLI on synthetic cases: L1 search, budgets, then train and predict."""


import lightning.pytorch as pl
import pytest
import torch

from medseg.blocks.cakes import SPACES
from medseg.cli import main
from medseg.data.datamodule import SegDataModule
from medseg.nets import build_net
from medseg.search.run import SearchModule
from tests.conftest import train_tiny
from tests.unit.test_search import check_file, search_tiny

NET = {"channels": [4, 8], "strides": [1, 2], "kernel_sizes": [3, 3]}
PATCH = [16, 16, 16]


def test_l1_search_shrinks_expensive_ops_faster(brats_root):
    module = SearchModule(variant="cost", l1=50.0, modalities=["flair", "t1ce"], label_convention="brats2021",
                          block="cakes", block_kwargs={"ops": "3d-2d-1d"}, **NET)
    data = SegDataModule(root=str(brats_root), modalities=["flair", "t1ce"], spacing=None, patch_size=PATCH)
    trainer = pl.Trainer(accelerator="cpu", max_steps=3, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=data)
    gamma = torch.stack([layer.gamma.detach().abs().mean(1) for layer in module.search_layers.values()])  # (L, 3)
    assert (gamma[:, 0] < gamma[:, 1]).all() and (gamma[:, 1] < gamma[:, 2]).all()  # 3D < 2D < 1D
    shares = [float(trainer.callback_metrics[f"search/share_{op}"]) for op in SPACES["3d-2d-1d"]]  # the logged mix
    assert sum(shares) == pytest.approx(1.0)


def test_search_then_train_then_predict(brats_root, tmp_path, capsys):
    out = tmp_path / "cakes.json"
    assert search_tiny(brats_root, tmp_path / "search", out, "--trainer.max_steps=4") == 0
    assert "searched channels per op" in capsys.readouterr().out
    data = check_file(out)
    assert data["provenance"]["steps"] == 4 and data["provenance"]["variant"] == "performance"
    ckpt = train_tiny(brats_root, tmp_path / "train", "--model.block=cakes", f"--model.block_kwargs.config={out}",
                      "--trainer.max_steps=2", "--trainer.limit_val_batches=1") / "last.ckpt"
    mask = tmp_path / "mask.nii.gz"
    assert main(["predict", str(brats_root / "case0"), "--model", str(ckpt), "--output", str(mask)]) == 0
    assert mask.exists()
    assert main(["predict", str(brats_root / "case0"), "--model", str(tmp_path / "search/checkpoints/last.ckpt"),
                 "--output", str(tmp_path / "m2.nii.gz")]) == 2  # a supernet is not a network to predict with


def test_cost_search_under_a_budget_through_the_cli(brats_root, tmp_path):
    out = tmp_path / "cakes.json"
    assert search_tiny(brats_root, tmp_path / "run", out, "--trainer.max_steps=2", "--search.variant=cost",
                       "--search.ops=3d-2d-1d", "--search.budget=0.4", "--search.budget_on=params") == 0
    data = check_file(out)
    assert {"variant": "cost", "ops": "3d-2d-1d", "budget": 0.4, "budget_on": "params"}.items() <= \
        data["provenance"].items()
    with torch.device("meta"):
        searched = build_net("unet", 2, 3, block="cakes", block_kwargs={"config": data}, **NET)
        conv = build_net("unet", 2, 3, **NET)
    assert sum(p.numel() for p in searched.parameters()) <= 0.4 * sum(p.numel() for p in conv.parameters())


def test_impossible_budget_fails_before_training(brats_root, tmp_path, capsys):
    rc = search_tiny(brats_root, tmp_path / "run", tmp_path / "c.json", "--search.budget=0.01")
    assert rc == 2
    assert "error: --search.budget=0.01" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()
