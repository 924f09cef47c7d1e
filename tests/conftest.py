"""Shared fixtures: synthetic BraTS-like cases written as real NIfTI files, and a tiny model trained through the CLI.

Tiers, by folder (markers added here, so `-m "not slow"` and a folder select the same tests):
  tests/unit         fast: components on tiny synthetic data (`python -m pytest tests/unit`)
  tests/integration  CLI training and prediction, DDP, the wheel, hadolint, experiments: marked integration, slow
  tests/data         on the shared data sets (env MEDSEG_TEST_DATA, default <repo>/../shared/data; skipped with the
                     reason when absent): marked data, slow
"""

import os
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.cli import main

os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDSEG_TEST_DATA") or REPO.parent / "shared" / "data")
TIER_MARKERS = {"integration": ("integration", "slow"), "data": ("data", "slow")}
SHAPE = (32, 36, 28)
BRATS_AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1, 0, 239], [0, 0, 1, 0], [0, 0, 0, 1]])


def synthetic_case(seed: int, shape=SHAPE) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A 'brain' ellipsoid with a tumour: edema shell (2), core (1), enhancing rim (4); bright on flair/t1ce."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    brain = (grid**2).sum(0) < 0.6
    centre = rng.uniform(-0.25, 0.25, 3)[:, None, None, None]
    r = np.sqrt(((grid - centre) ** 2).sum(0))
    label = np.zeros(shape, np.uint8)
    label[r < 0.35] = 2
    label[r < 0.22] = 4
    label[r < 0.15] = 1
    label[~brain] = 0
    noise = lambda: rng.normal(0, 0.1, shape)  # noqa: E731
    flair = (1.0 + (label > 0) * 1.5 + noise()) * brain * 100
    t1ce = (1.0 + (label == 4) * 2.0 + noise()) * brain * 100
    return {"flair": flair.astype(np.float32), "t1ce": t1ce.astype(np.float32)}, label


def write_case(folder: Path, name: str, seed: int, affine=BRATS_AFFINE, with_label: bool = True) -> Path:
    case = folder / name
    case.mkdir(parents=True, exist_ok=True)
    channels, label = synthetic_case(seed)
    for modality, array in channels.items():
        nib.save(nib.Nifti1Image(array, affine), case / f"{name}_{modality}.nii.gz")
    if with_label:
        nib.save(nib.Nifti1Image(label, affine), case / f"{name}_seg.nii.gz")
    return case


@pytest.fixture(scope="session")
def brats_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("brats")
    for i in range(3):
        write_case(root, f"case{i}", seed=i)
    return root


TINY = [
    "--data.modalities=[flair, t1ce]", "--data.spacing=null", "--data.patch_size=[16,16,16]",
    "--model.channels=[4,8]", "--model.strides=[1,2]", "--model.kernel_sizes=[3,3]",
    "--trainer.accelerator=cpu", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
]
TINY_WANDB = [a for a in TINY if a != "--trainer.logger=false"]  # keeps the recipe's wandb logger


def train_tiny(root: Path, run: Path, *extra: str) -> Path:
    rc = main(["train", "--config", str(REPO / "configs/brats.yaml"), f"--data.root={root}", *TINY,
               f"--trainer.default_root_dir={run}", *extra])
    assert rc == 0
    return run / "checkpoints"


@pytest.fixture(scope="session")
def tiny_ckpt(brats_root, tmp_path_factory) -> Path:
    """best.ckpt of a 2-input, 3-region UNet trained for a few steps on the synthetic cases."""
    return train_tiny(brats_root, tmp_path_factory.mktemp("run"), "--trainer.max_steps=6") / "best.ckpt"


@pytest.fixture(scope="session")
def oracle(tmp_path_factory) -> dict[str, Path]:
    """Hand-set checkpoints whose masks are known functions of the input (tests/oracle.py), by plan name:
    `native` (conftest's cases on their own grid) and `2mm` (oracle cases, resampled and back)."""
    from tests.oracle import write_oracles  # it imports this module

    return write_oracles(tmp_path_factory.mktemp("oracle"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its tier folder."""
    for item in items:
        tier = Path(item.path).relative_to(REPO / "tests").parts[0]
        for marker in TIER_MARKERS.get(tier, ()):
            item.add_marker(marker)


def shared(*parts: str) -> Path:
    """A path under the shared data (MEDSEG_TEST_DATA), or skip the test with the reason when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path} (set MEDSEG_TEST_DATA to the folder holding it)")
    return path


def console_script() -> str:
    """The installed `medseg` command (also when the venv is not on PATH)."""
    exe = shutil.which("medseg") or shutil.which("medseg", path=str(Path(sys.executable).parent))
    assert exe, "the medseg console script is not installed"
    return exe
