"""The recipes (configs/*.yaml) and the demo sample (data/brats_sample), in a source checkout or an installed package.

A wheel ships them inside the package as medseg/recipes and medseg/sample (pyproject.toml maps the repository's
folders there), found with importlib.resources; a checkout or an editable install uses the repository's folders
themselves, so an edited recipe is the one that runs. Either way `medseg bench` and `medseg demo` work from any
directory, and `--config brats` names a shipped recipe where no file of that name exists.
"""

from importlib.resources import files
from pathlib import Path

from medseg.errors import MedsegError

CHECKOUT = Path(__file__).resolve().parents[1]


def shipped(packaged: str, checkout: str) -> Path:
    """The folder installed as medseg/<packaged>, else the checkout's <checkout> folder."""
    installed = files("medseg") / packaged
    if isinstance(installed, Path) and installed.is_dir():
        return installed
    if (CHECKOUT / checkout).is_dir():
        return CHECKOUT / checkout
    raise MedsegError(f"{installed}: missing from this medseg installation; reinstall it (pip install medseg/)")


def recipes() -> Path:
    return shipped("recipes", "configs")


def sample() -> Path:
    return shipped("sample", "data/brats_sample")


def recipe_path(config: str | Path) -> str:
    """`config` itself when it is a file (or a path); the shipped recipe when it is a bare name such as `brats` or
    `brats.yaml` that names no file here; otherwise `config` unchanged, for the caller to report."""
    config = str(config)
    if Path(config).exists() or Path(config).name != config:
        return config
    candidate = recipes() / f"{config.removesuffix('.yaml')}.yaml"
    return str(candidate) if candidate.is_file() else config


def with_recipe_paths(argv: list[str]) -> list[str]:
    """LightningCLI arguments with every `--config NAME` / `--config=NAME` of a shipped recipe made a path."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg.startswith("--config="):
            out[i] = "--config=" + recipe_path(arg.removeprefix("--config="))
        elif arg == "--config" and i + 1 < len(out):
            out[i + 1] = recipe_path(out[i + 1])
    return out
