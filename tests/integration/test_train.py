import json
from pathlib import Path

import pytest
import torch
import yaml

from medseg.cli import main
from tests.conftest import REPO, TINY_WANDB, train_tiny


def print_config(capsys, *args: str) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("recipe", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_every_recipe_parses(capsys, recipe):
    config = print_config(capsys, "--config", str(REPO / "configs" / recipe))
    assert config["data"]["modalities"] and config["data"]["label_convention"]
    assert "modalities" not in config["model"]  # linked from data, so not set twice
    neurons = config["data"]["label_convention"] in ("em_boundary", "em_affinity")  # ranked by adapted Rand error
    expected = ("val/adapted_rand_error", "min") if neurons else ("val/dice_mean", "max")
    assert (config["checkpoint"]["monitor"], config["checkpoint"]["mode"]) == expected
    assert config["trainer"]["logger"]["class_path"].endswith("WandbLogger")


def test_overrides_and_links(capsys, tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("data:\n  patch_size: [32, 32, 32]\n")
    config = print_config(capsys, "--config", str(REPO / "configs/brats.yaml"), "--config", str(overlay),
                          "--data.modalities=[flair, t1ce]", "--data.label_convention=brats2013",
                          f"--trainer.default_root_dir={tmp_path / 'run'}", "--model.block_kwargs={'a': 1}")
    assert config["data"]["patch_size"] == [32, 32, 32]
    assert config["data"]["spacing"] == [2.0, 2.0, 2.0]  # the rest of the first config survives the overlay
    assert config["data"]["modalities"] == ["flair", "t1ce"]
    assert config["data"]["label_convention"] == "brats2013"
    assert config["model"]["block_kwargs"] == {"a": 1}


def test_checkpoint_carries_what_predict_needs(tiny_ckpt):
    ckpt = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    meta = ckpt["medseg"]
    json.dumps(meta)  # plain values only
    assert meta["modalities"] == ["flair", "t1ce"]
    assert meta["regions"] == ["wt", "tc", "et"] and meta["label_convention"] == "brats2021"
    assert meta["arch"] == "unet" and meta["net"]["block"] == "conv"
    assert meta["patch_size"] == [16, 16, 16] and meta["normalize"] == "nonzero"
    assert (tiny_ckpt.parent / "last.ckpt").is_file()
    assert (tiny_ckpt.parent.parent / "config.yaml").is_file()


def test_training_resumes_from_last(brats_root, tmp_path):
    ckpts = train_tiny(brats_root, tmp_path, "--trainer.max_steps=2")
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == 2
    train_tiny(brats_root, tmp_path, "--trainer.max_steps=4", "--ckpt_path=last")
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == 4


def test_wandb_is_offline_without_an_account(brats_root, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    run = tmp_path / "run"
    rc = main(["train", "--config", str(REPO / "configs/brats.yaml"), f"--data.root={brats_root}", *TINY_WANDB,
               f"--trainer.default_root_dir={run}", "--trainer.max_steps=1"])
    assert rc == 0
    assert list(Path(run).glob("wandb/offline-run-*")), "expected an offline wandb run under the run directory"
