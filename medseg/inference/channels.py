"""Which file is which input channel, and which files make a case: checked by name, never guessed by order.

A model's plan lists its modalities in network order. A file is matched to a modality by the last token of its name
that names one (tokens split at `_`, `-`, `.`): BraTS `_flair`/`_t1ce`, BraTS 2023 `-t2f`/`-t1c`, DeepMedic
`Flair_…`/`T1c_…`. nnU-Net's `_0000`, `_0001`… suffixes are the plan's order (as nnU-Net's dataset.json defines it),
and `--channels` names the order of the given files (or of a 4D file's channels) explicitly. Channels the model does
not use are dropped by name; a file that cannot be identified, or two files for one modality, is an error.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medseg.data.io import is_image, stem
from medseg.errors import MedsegError

ALIASES = {  # modality -> name tokens that mean it (lower case)
    "flair": ("flair", "t2f", "t2flair"),
    "t1ce": ("t1ce", "t1c", "t1gd", "t1post"),
    "t1": ("t1", "t1n", "t1w"),
    "t2": ("t2", "t2w"),
}
NOT_IMAGES = {"seg", "label", "labels", "mask", "brainmask", "otmulticlass", "gt", "truth", "pred"}
CHANNEL_INDEX = re.compile(r"^(?P<case>.+)_(?P<index>\d{4})$")  # nnU-Net: <case>_0000


@dataclass
class Channel:
    """One input channel: a file, and which channel of it when the file is 4D (None: a 3D file)."""

    path: str
    index: int | None = None


def tokens(path: str | Path) -> list[str]:
    return [t for t in re.split(r"[_\-.]+", stem(path).lower()) if t]


def modality_of(path: str | Path, modalities: Sequence[str]) -> str | None:
    """The modality named by the file: the last name token that is a modality or one of its aliases."""
    names = {alias: m for m in modalities for alias in (m.lower(), *ALIASES.get(m.lower(), ()))}
    others = {alias for aliases in ALIASES.values() for alias in aliases}  # modalities this model does not use
    for token in reversed(tokens(path)):
        if token in names:
            return names[token]
        if token in others:
            return ""  # a known modality the model does not take (dropped by name)
    return None


def is_label_file(path: str | Path) -> bool:
    return bool(set(tokens(path)) & NOT_IMAGES)


def match_channels(files: Sequence[str], modalities: Sequence[str], channels: Sequence[str] | None = None,
                   n_channels: Sequence[int] | None = None) -> list[Channel]:
    """The model's channels, in its order, from the given files.

    files: per-channel 3D files, or 4D files (channels last, MSD style) whose channel counts are `n_channels`.
    channels: `--channels`, the modality of each given channel in order (a 4D file's channels count one each).
    """
    counts = list(n_channels) if n_channels is not None else [1] * len(files)
    given = [Channel(f, i if n > 1 else None) for f, n in zip(files, counts, strict=True) for i in range(n)]
    if channels is not None:
        named = _by_option(given, channels, modalities)
    elif len(given) == len(modalities) == 1:
        return given
    elif any(n > 1 for n in counts):
        raise MedsegError(f"{files[0]}: a 4D image with {sum(counts)} channels: say which is which with --channels "
                          f"(e.g. --channels {','.join(modalities)}, or flair,t1,t1ce,t2 for MSD Task01)")
    else:
        named = _by_name(given, modalities)
    missing = [m for m in modalities if m not in named]
    if missing:
        found = ", ".join(f"{Path(c.path).name}={m}" for m, c in named.items()) or "none"
        raise MedsegError(f"{Path(files[0]).parent}: no input for modality {', '.join(missing)} among "
                          f"{[Path(f).name for f in files]} (identified: {found}); name files "
                          f"*_{missing[0]}.nii.gz or give --channels")
    return [named[m] for m in modalities]


def _by_option(given: list[Channel], channels: Sequence[str], modalities: Sequence[str]) -> dict[str, Channel]:
    if len(channels) != len(given):
        raise MedsegError(f"--channels names {len(channels)} channels but the input has {len(given)}")
    named: dict[str, Channel] = {}
    for ch, name in zip(given, channels, strict=True):
        said = modality_of(ch.path, modalities) if ch.index is None else None
        if said is not None and said != name and said in modalities:
            raise MedsegError(f"{ch.path}: --channels says {name}, but the file name says {said}")
        if name in named:
            raise MedsegError(f"--channels names {name} twice")
        if name in modalities:
            named[name] = ch
    return named


def _by_name(given: list[Channel], modalities: Sequence[str]) -> dict[str, Channel]:
    indexed = [CHANNEL_INDEX.match(stem(c.path)) for c in given]
    if all(indexed):  # nnU-Net style: the index is the plan's channel order
        by_index = {int(m["index"]): c for m, c in zip(indexed, given, strict=True)}
        return {mod: by_index[i] for i, mod in enumerate(modalities) if i in by_index}
    named: dict[str, Channel] = {}
    for ch in given:
        mod = modality_of(ch.path, modalities)
        if mod is None:
            raise MedsegError(f"{ch.path}: cannot tell which modality this file is (the model takes "
                              f"{', '.join(modalities)}); name it *_<modality>.nii.gz or give --channels")
        if mod in named:
            raise MedsegError(f"{ch.path}: a second file for {mod} (also {named[mod].path})")
        if mod:
            named[mod] = ch
    return named


def case_name(files: Sequence[str | Path], modalities: Sequence[str]) -> str:
    """The case a set of channel files belongs to: the first file's name without its modality or index suffix."""
    first = stem(files[0])
    if m := CHANNEL_INDEX.match(first):
        return m["case"]
    parts = re.split(r"([_\-.]+)", first)  # keeps separators: name, sep, name, ...
    words = [p.lower() for p in parts[::2]]
    for i in range(len(words) - 1, -1, -1):
        if modality_of(words[i], modalities) is not None:
            name = "".join(parts[: max(0, 2 * i - 1)])
            return name or Path(files[0]).resolve().parent.name
    return first


def group_cases(folder: Path, modalities: Sequence[str]) -> dict[str, list[str]]:
    """Cases in a folder: each sub-folder is one (BraTS layout), and loose image files are grouped by case name.

    A single-modality model (EM) takes every loose image as its own case.
    """
    cases: dict[str, list[str]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_dir():
            cases[p.name] = [str(f) for f in sorted(p.iterdir()) if f.is_file() and is_image(f)
                             and not is_label_file(f)]
        elif is_image(p) and not is_label_file(p):
            name = stem(p) if len(modalities) == 1 else case_name([p], modalities)
            cases.setdefault(name, []).append(str(p))
    return cases
