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
FINGERPRINTS = Path(__file__).with_name("fingerprints.json")  # experiments/qc_fingerprint.py


def cards() -> dict[str, dict]:
    return json.loads(resources.files(__name__).joinpath("cards.json").read_text())


def default_model(files: list[str]) -> str:
    """The bundled model for these inputs: the EM model for TIFF/HDF5 stacks, the BraTS model otherwise."""
    return DEFAULT_EM if files and suffix(files[0]) in TIFF + HDF5 else DEFAULT_MRI


def bundled_path(name: str, file: str | None = None) -> Path:
    path = Path(str(resources.files(__name__).joinpath(file or cards()[name]["file"])))
    if not path.is_file():
        raise MedsegError(f"bundled model {name!r}: its file {path.name} is missing from this installation")
    return path


def bundled_members(name: str) -> list[Path]:
    """Every checkpoint of a bundled model: its `file`, then the `members` it is averaged with (an ensemble of
    configurations, weighed equally as `--model a,b` does)."""
    card = cards()[name]
    return [bundled_path(name)] + [bundled_path(name, f) for f in card.get("members", [])]


def resolve_model(model: str | Path) -> Path:
    """A checkpoint path as given, or the file of a bundled model by name; unknown names suggest the closest."""
    path = Path(model)
    if path.is_file():
        return path
    if str(model) not in cards() and (path.suffix or "/" in str(model)):
        raise MedsegError(f"{model}: no such checkpoint file")
    look_up(str(model), cards(), "model", hint=", or give a checkpoint path")
    return bundled_path(str(model))


def bundled_fingerprint(checkpoint: Path, plan_key: str) -> dict | None:
    """The training fingerprint stored beside a bundled checkpoint whose plan has none (experiments/
    qc_fingerprint.py), while the checkpoint's preprocessing is still the one it was measured with."""
    if checkpoint.resolve().parent != FINGERPRINTS.parent.resolve() or not FINGERPRINTS.is_file():
        return None
    entry = json.loads(FINGERPRINTS.read_text()).get(checkpoint.name)
    return entry["fingerprint"] if entry and entry["plan_key"] == plan_key else None
