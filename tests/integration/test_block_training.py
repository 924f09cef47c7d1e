"""Every architecture × block trains and predicts through the CLI; block kind and options travel in the checkpoint."""

import json

import nibabel as nib
import pytest
import torch

from medseg.blocks import BLOCKS
from medseg.blocks.cakes import Cakes
from medseg.cli import main
from medseg.nets import NETS, build_net
from tests.conftest import train_tiny, write_case

SHORT = ["--trainer.max_steps=2", "--trainer.limit_val_batches=1"]


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return write_case(tmp_path_factory.mktemp("unseen"), "unseen", seed=7, with_label=False)


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("arch", NETS)
def test_every_arch_and_block_trains_and_predicts(brats_root, scan, tmp_path, arch, block):
    ckpt = train_tiny(brats_root, tmp_path / "run", f"--model.arch={arch}", f"--model.block={block}", *SHORT)
    meta = torch.load(ckpt / "last.ckpt", weights_only=True)["medseg"]
    assert (meta["arch"], meta["net"]["block"]) == (arch, block)
    out = tmp_path / "mask.nii.gz"
    assert main(["predict", str(scan), "--model", str(ckpt / "last.ckpt"), "--output", str(out)]) == 0
    assert nib.load(out).shape == nib.load(next(scan.glob("*_flair.nii.gz"))).shape


def test_searched_configuration_travels_in_the_checkpoint(brats_root, scan, tmp_path):
    template = build_net("unet", 2, 3, channels=[4, 8], strides=[1, 2], kernel_sizes=[3, 3], block="cakes")
    layers = {name: {"ops": {"3x3x3": 1, "1x3x3": m.out_channels - 1}, "in": m.in_channels, "out": m.out_channels}
              for name, m in template.named_modules() if isinstance(m, Cakes)}
    config = tmp_path / "cakes.json"
    config.write_text(json.dumps({"schema": 1, "layers": layers}))
    ckpt = train_tiny(brats_root, tmp_path / "run", "--model.block=cakes",
                      f"--model.block_kwargs.config={config}", *SHORT) / "last.ckpt"
    config.unlink()  # predict must not need the file any more
    assert torch.load(ckpt, weights_only=True)["medseg"]["net"]["block_kwargs"]["config"]["layers"] == layers
    assert main(["predict", str(scan), "--model", str(ckpt), "--output", str(tmp_path / "mask.nii.gz")]) == 0


def test_bad_block_options_are_a_clean_error(brats_root, tmp_path, capsys):
    rc = main(["train", "--config", "configs/brats.yaml", f"--data.root={brats_root}", "--model.block=cakes",
               f"--model.block_kwargs.config={tmp_path / 'missing.json'}", "--trainer.logger=false"])
    assert rc == 2
    assert "missing.json: cannot read the configuration" in capsys.readouterr().err
