"""Finding cases: a BraTS-layout folder, an MSD/Decathlon datalist JSON, or a single case folder for predict."""

import json
from collections.abc import Sequence
from pathlib import Path

from medseg.data.io import NIFTI, is_image, suffix
from medseg.errors import MedsegError
from medseg.utils.files import atomic_write


def case_files(folder: Path, modalities: Sequence[str], with_label: bool = False) -> dict:
    """Pick `<anything>_<modality>.nii[.gz]` per modality in a case folder; the suffix must match exactly."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and suffix(p) in NIFTI + (".nrrd", ".mha"))
    if not files:
        raise MedsegError(f"{folder}: no image files in this folder")

    def pick(name: str) -> Path:
        matches = [p for p in files if p.name[: -len(suffix(p))].endswith(f"_{name}")]
        if not matches:
            raise MedsegError(f"{folder}: missing modality '{name}' (no file named *_{name}.nii.gz)")
        if len(matches) > 1:
            raise MedsegError(f"{folder}: several files for '{name}': {[p.name for p in matches]}")
        return matches[0]

    case = {"image": [str(pick(m)) for m in modalities], "case": folder.name}
    if with_label:
        case["label"] = str(pick("seg"))
    return case


def brats_cases(root: str | Path, modalities: Sequence[str]) -> list[dict]:
    """Every sub-folder of `root` is a case `<case>/<case>_<modality>.nii.gz` with `<case>_seg.nii.gz`."""
    return [case_files(f, modalities, with_label=True) for f in case_folders(root)]


def case_folders(root: str | Path) -> list[Path]:
    """The sub-folders of a BraTS-layout root, sorted; an error if there are none."""
    root = Path(root)
    if not root.is_dir():
        raise MedsegError(f"{root}: no such directory")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise MedsegError(f"{root}: no case folders found (expected <root>/<case>/<case>_<modality>.nii.gz)")
    return folders


def read_datalist(path: str | Path) -> tuple[list[dict], list[dict]]:
    """MSD-style JSON: `training` and optional `validation` lists of {image: file | [files], label: file}.

    Relative paths are resolved against the JSON file's folder, as in the Decathlon's dataset.json.
    """
    spec = load_datalist(path)
    return ([datalist_entry(e, Path(path)) for e in spec["training"]],
            [datalist_entry(e, Path(path)) for e in spec.get("validation", [])])


def write_datalist(out: Path, description: str, training: list[dict], validation: list[dict]) -> Path:
    """`out/datalist.json` in the form read_datalist reads (written atomically); its path."""
    spec = {"description": description, "training": training, "validation": validation}
    atomic_write(out / "datalist.json", lambda p: p.write_text(json.dumps(spec, indent=2)))
    return out / "datalist.json"


def load_datalist(path: str | Path) -> dict:
    """The datalist's JSON, checked to hold a non-empty `training` list (entries are checked by datalist_entry)."""
    path = Path(path)
    if not path.is_file():
        raise MedsegError(f"{path}: no such datalist file")
    try:
        spec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MedsegError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(spec, dict) or not spec.get("training"):
        raise MedsegError(f"{path}: needs a non-empty 'training' list")
    return spec


def datalist_entry(entry: dict, datalist: Path) -> dict:
    """One datalist entry as a case dict with absolute paths; an error if a listed file is missing or unreadable."""
    if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
        raise MedsegError(f"{datalist}: every entry needs 'image' and 'label', got {entry!r}")
    images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
    resolve = lambda p: str((datalist.parent / p).resolve())  # noqa: E731
    files = [resolve(p) for p in images] + [resolve(entry["label"])]
    for f in files:
        if not Path(f).is_file():
            raise MedsegError(f"{datalist}: listed file {f} does not exist")
        if not is_image(f):
            raise MedsegError(f"{datalist}: listed file {f} is not a supported image type")
    return {"image": files[:-1], "label": files[-1], "case": str(entry.get("case") or images[0])}
