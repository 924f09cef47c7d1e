"""Which file is which input channel, and which files make a case: checked by name, never guessed by order.

A model's plan lists its modalities in network order. A file is matched to a modality by the last token of its name
that names one (tokens split at `_`, `-`, `.`, space; a token joined with the one before it is tried first, so
`T2_FLAIR` is flair and `t1_ce` is t1ce): BraTS `_flair`/`_t1ce`, BraTS 2023 `-t2f`/`-t1n`/`-t1c`/`-t2w`, BraTS
Toolkit / CaPTk `_fla`/`_t1`/`_t1c`/`_t2`, DeepMedic `Flair_…`/`T1c_…`, scanner words (T1Gd, T1post, T1CE). Tokens
are compared whole, so `_t1` never takes `_t1c`. nnU-Net's `_0000`, `_0001`… suffixes are the plan's order (as
nnU-Net's dataset.json defines it), and `--channels` names the order of the given files (or of a 4D file's channels)
explicitly. Channels the model does not use are dropped by name; a file that cannot be identified, or two files for
one modality, is an error. In a case folder (`case_files`), files naming no modality the model takes are left out
with a note instead.
"""

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from medseg.data.io import is_image, stem
from medseg.errors import MedsegError

ALIASES = {  # modality -> name tokens that mean it (lower case; "t1ce" also matches `t1_ce`, "t2flair" `T2_FLAIR`)
    "flair": ("flair", "fla", "fl", "t2f", "t2flair", "t2wflair"),
    "t1ce": ("t1ce", "t1c", "t1gd", "t1post", "t1wce", "t1cgd", "t1contrast", "t1km", "t1wgd", "t1wpost"),
    "t1": ("t1", "t1n", "t1w", "t1native", "t1pre"),
    "t2": ("t2", "t2w"),
}
NOT_IMAGES = {"seg", "segmentation", "label", "labels", "mask", "brainmask", "otmulticlass", "gt", "truth", "pred",
              "prediction", "probabilities"}
CHANNEL_INDEX = re.compile(r"^(?P<case>.+)_(?P<index>\d{4})$")  # nnU-Net: <case>_0000


@dataclass
class Channel:
    """One input channel: a file, and which channel of it when the file is 4D (None: a 3D file)."""

    path: str
    index: int | None = None


def tokens(path: str | Path) -> list[str]:
    return [t for t in re.split(r"[_\-. ]+", stem(path).lower()) if t]


def modality_of(path: str | Path, modalities: Sequence[str]) -> str | None:
    """The modality named by the file: the last name token (or token pair) that is a modality or one of its
    aliases; "" for a known modality the model does not take, None when the name says nothing."""
    names = {alias: m for m in modalities for alias in (m.lower(), *ALIASES.get(m.lower(), ()))}
    others = {alias for aliases in ALIASES.values() for alias in aliases}  # modalities this model does not use
    words = tokens(path)
    for i in range(len(words) - 1, -1, -1):
        for token in ([words[i - 1] + words[i]] if i else []) + [words[i]]:
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
    elif any(n > 1 for n in counts) and (listed := dataset_channels(files[0], sum(counts))):
        named = _by_option(given, listed, modalities)
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


def dataset_channels(path: str | Path, count: int) -> list[str] | None:
    """An MSD / nnU-Net task folder's channel names for a 4D file: `modality` (MSD) or `channel_names` (nnU-Net v2)
    of the dataset.json beside the file or one or two folders up, each read as a modality name ("T1w" -> t1,
    "t1gd" -> t1ce); None when there is none or it lists another number of channels."""
    for folder in list(Path(path).resolve().parents)[:3]:
        meta = folder / "dataset.json"
        if not meta.is_file():
            continue
        try:
            listed = json.loads(meta.read_text())
            names = listed.get("channel_names") or listed.get("modality") or {}
            ordered = [str(names[k]) for k in sorted(names, key=int)]
        except (ValueError, AttributeError, KeyError, TypeError):
            return None
        if len(ordered) != count:
            return None
        known = list(ALIASES)
        return [modality_of(n, known) or n.lower() for n in ordered]
    return None


def case_files(files: Sequence[str], modalities: Sequence[str], named: bool = True,
               channel_count: Callable[[str], int] = lambda f: 1) -> tuple[list[str], list[str]]:
    """(inputs, ignored) of one case folder's image files: label files (seg, mask…) are left out, and, when the
    channels are identified by name (`named`; not with --channels), so are files that name no modality the model
    takes (coverage masks, other sequences). nnU-Net `_0000` files, when present, are the inputs."""
    images = [f for f in files if not is_label_file(f)]
    if named and len(modalities) > 1:
        indexed = [f for f in images if CHANNEL_INDEX.match(stem(f))]
        inputs = indexed or [f for f in images if modality_of(f, modalities) or channel_count(f) > 1]
        images = inputs or images  # nothing named: match_channels says which file it cannot tell
    return images, [f for f in files if f not in images]


def find_cases(folder: Path, modalities: Sequence[str], named: bool = True,
               channel_count: Callable[[str], int] = lambda f: 1) -> tuple[dict[str, list[str]], list[str], bool]:
    """(cases, ignored files, whether `folder` is itself one case).

    A folder is a folder of cases when it holds case folders (BraTS layout: each sub-folder with images is a case)
    or several complete groups of loose channel files (`<case>_flair`, `<case>_t1ce`, …, or `<case>_0000`…; a 4D
    file with the model's channels is a group of its own). Otherwise it is one case, whatever else it holds.
    A single-modality model (EM) takes every loose image as its own case.
    """
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    loose = [str(p) for p in entries if p.is_file() and is_image(p)]
    sub = {p.name: [str(f) for f in sorted(p.iterdir()) if f.is_file() and is_image(f)] for p in entries if p.is_dir()}
    sub = {name: files for name, files in sub.items() if files}
    groups: dict[str, list[str]] = {}
    ignored = []
    for f in loose:
        if is_label_file(f):
            ignored.append(f)
        elif len(modalities) == 1 or channel_count(f) > 1:
            groups[stem(f)] = [f]
        elif CHANNEL_INDEX.match(stem(f)) or modality_of(f, modalities):
            groups.setdefault(case_name([f], modalities), []).append(f)
        else:
            ignored.append(f)
    complete = {c: fs for c, fs in groups.items() if _complete(fs, modalities, channel_count)}
    if not sub and len(complete) < 2:
        inputs, left = case_files(loose, modalities, named, channel_count)
        return ({folder.resolve().name: inputs} if inputs else {}), left, True
    cases = dict(groups) if not sub else dict(complete)
    ignored += [f for c, fs in groups.items() if c not in cases for f in fs]
    for name, files in sub.items():
        cases[name], left = case_files(files, modalities, named, channel_count)
        ignored += left
    return cases, ignored, False


def _complete(files: Sequence[str], modalities: Sequence[str], channel_count: Callable[[str], int]) -> bool:
    """Whether a group of loose files holds every channel the model takes (by name, nnU-Net index or a 4D file)."""
    if any(channel_count(f) >= len(modalities) for f in files):
        return True
    indices = {int(m["index"]) for f in files if (m := CHANNEL_INDEX.match(stem(f)))}
    return indices >= set(range(len(modalities))) or {modality_of(f, modalities) for f in files} >= set(modalities)
