"""The installed package works anywhere: recipes and the demo sample are package data, found with importlib.resources
in a wheel and in the repository's configs/ and data/brats_sample/ from a checkout."""

import shutil
import subprocess
import sys
import zipfile

import pytest

from medseg import resources
from medseg.resources import recipe_path, with_recipe_paths
from tests.conftest import REPO
from tests.integration.test_platform import DOCKERFILE, instructions

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def shipped_files() -> set[str]:
    """What the wheel must hold, as paths inside it."""
    recipes = {f"medseg/recipes/{p.name}" for p in (REPO / "configs").glob("*.yaml")}
    sample_root = REPO / "data" / "brats_sample"
    sample = {f"medseg/sample/{p.relative_to(sample_root)}" for p in sample_root.rglob("*") if p.is_file()}
    return recipes | sample


def test_pyproject_lists_every_package():
    """The package-dir mapping needs an explicit package list: a new subpackage must not be left out of the wheel."""
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "medseg").rglob("*.py")}  # data/: no __init__
    assert set(PYPROJECT["packages"]) == found | {"medseg.recipes", "medseg.sample"}
    assert PYPROJECT["package-dir"] == {"medseg.recipes": "configs", "medseg.sample": "data/brats_sample"}


def test_checkout_uses_the_repository_folders():
    assert resources.recipes() == REPO / "configs" and resources.sample() == REPO / "data" / "brats_sample"
    assert recipe_path("brats") == recipe_path("brats.yaml") == str(REPO / "configs" / "brats.yaml")
    assert recipe_path("configs/missing.yaml") == "configs/missing.yaml"  # a path is never replaced
    assert recipe_path("nonexistent") == "nonexistent"  # left for LightningCLI to report
    assert with_recipe_paths(["--config", "em_isbi", "--config=brats", "--data.root=x"]) == [
        "--config", str(REPO / "configs" / "em_isbi.yaml"), f"--config={REPO / 'configs' / 'brats.yaml'}",
        "--data.root=x"]


def test_wheel_from_the_docker_context_ships_recipes_and_sample(tmp_path):
    """Build a wheel from exactly what the Dockerfile copies, unpack it, and import it from an empty directory: the
    recipes and the sample come from inside the package, and `--config brats` resolves to the shipped recipe."""
    context = tmp_path / "context"
    for step in instructions(DOCKERFILE.read_text()):
        if step.startswith("COPY "):
            for source in step.split()[1:-1]:
                copy = shutil.copytree if (REPO / source).is_dir() else shutil.copy2
                (context / source).parent.mkdir(parents=True, exist_ok=True)
                copy(REPO / source, context / source)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(tmp_path / "dist"), str(context)], capture_output=True, text=True,
                           timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("medseg-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        assert shipped_files() <= set(z.namelist())
        z.extractall(tmp_path / "site")

    empty = tmp_path / "empty"
    empty.mkdir()
    code = ("from medseg import resources; print(resources.recipes()); print(resources.sample()); "
            "print(resources.recipe_path('brats'))")
    found = subprocess.run([sys.executable, "-c", code], cwd=empty, capture_output=True, text=True, timeout=120,
                           env={"PYTHONPATH": str(tmp_path / "site"), "PATH": ""})
    assert found.returncode == 0, found.stderr
    site = tmp_path / "site" / "medseg"
    assert found.stdout.split() == [str(site / "recipes"), str(site / "sample"), str(site / "recipes" / "brats.yaml")]


@pytest.mark.parametrize("config", ["brats", "brats.yaml"])
def test_train_accepts_a_recipe_name(capsys, tmp_path, monkeypatch, config):
    from tests.integration.test_train import print_config

    monkeypatch.chdir(tmp_path)  # no file called brats here
    assert print_config(capsys, "--config", config)["data"]["spacing"] == [2.0, 2.0, 2.0]
