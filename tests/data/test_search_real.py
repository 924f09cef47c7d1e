"""`medseg search` on the shared BraTS cases, then training the searched network."""

import json

import pytest

from medseg.cli import main
from tests.conftest import REPO, shared
from tests.data.test_shared_data import deepmedic_entry
from tests.unit.test_search import check_file


@pytest.mark.slow
def test_search_on_real_data_then_train(tmp_path):
    """The acceptance command on the shared BraTS cases (FLAIR + T1ce, brats2013), then the searched net trains."""
    b, dm = shared("brats2021_case00006"), shared("deepmedic_brats2015_subset")
    entries = [{"image": [str(b / "BraTS2021_00006_flair.nii.gz"), str(b / "BraTS2021_00006_t1ce.nii.gz")],
                "label": str(b / "BraTS2021_00006_seg.nii.gz")}]
    datalist = tmp_path / "dl.json"
    datalist.write_text(json.dumps({"training": entries,
                                    "validation": [deepmedic_entry(dm / "validation/brats_2013_pat0003_1")]}))
    common = ["--config", str(REPO / "configs/brats.yaml"), f"--data.datalist={datalist}",
              "--data.modalities=[flair, t1ce]", "--data.label_convention=brats2013", "--trainer.accelerator=cpu",
              "--trainer.logger=false", "--trainer.enable_progress_bar=false"]
    out = tmp_path / "cakes.json"
    assert main(["search", *common, "--trainer.max_steps=1", f"--trainer.default_root_dir={tmp_path / 's'}",
                 f"--output={out}"]) == 0
    check_file(out)
    assert main(["train", *common, "--model.block=cakes", f"--model.block_kwargs.config={out}",
                 "--trainer.max_steps=1", "--trainer.limit_val_batches=1",
                 f"--trainer.default_root_dir={tmp_path / 't'}"]) == 0
