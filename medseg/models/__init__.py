"""Bundled models: checkpoints shipped inside the package, so `medseg predict scan.nii.gz` works without training.

`cards.json` describes each (inputs, outputs, data, licence, measured Dice, the command that retrains it); the
checkpoint beside it is an ordinary medseg checkpoint (plan + network weights), loaded with weights_only=True.
"""

import json
from importlib import resources
from pathlib import Path

from medseg.data.io import HDF5, TIFF, suffix
from medseg.errors import MedsegError
from medseg.registry import look_up

DEFAULT_MRI, DEFAULT_EM = "brats", "em-membrane"


def cards() -> dict[str, dict]:
    return json.loads(resources.files(__name__).joinpath("cards.json").read_text())


def default_model(files: list[str]) -> str:
    """The bundled model for these inputs: the EM model for TIFF/HDF5 stacks, the BraTS model otherwise."""
    return DEFAULT_EM if files and suffix(files[0]) in TIFF + HDF5 else DEFAULT_MRI


def bundled_path(name: str) -> Path:
    path = Path(str(resources.files(__name__).joinpath(cards()[name]["file"])))
    if not path.is_file():
        raise MedsegError(f"bundled model {name!r}: its file {path.name} is missing from this installation")
    return path


def resolve_model(model: str | Path) -> Path:
    """A checkpoint path as given, or the file of a bundled model by name; unknown names suggest the closest."""
    path = Path(model)
    if path.is_file():
        return path
    if str(model) not in cards() and (path.suffix or "/" in str(model)):
        raise MedsegError(f"{model}: no such checkpoint file")
    look_up(str(model), cards(), "model", hint=", or give a checkpoint path")
    return bundled_path(str(model))
