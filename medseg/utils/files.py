"""Writing files so that no reader ever sees half of one: every output of medseg goes through `atomic_write`."""

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call write(tmp) on a path of the same name in a temporary folder beside `path`, then move what it wrote into
    place, so no reader ever sees a half-written output.

    A folder rather than a temporary file: files are created by the writer itself, with the user's umask as open()
    gives them (mkstemp's are 0600, unreadable to the group of a shared lab folder or another Docker --user), and a
    detached format (.mhd + .zraw, .nhdr + .raw.gz) names its data file as it will be called. Data files move
    first and the named file last; everything is fsynced first, so a crash or power cut leaves the old output or
    the new one, never an empty file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".tmp-", dir=path.parent))
    try:
        write(folder / path.name)
        written = sorted(folder.iterdir(), key=lambda f: f.name == path.name)  # the named file last
        for f in written:
            fsync(f)
        for f in written:
            os.replace(f, path.parent / f.name)
        fsync(path.parent)  # the renames themselves
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: str | Path, data: object, dumps: Callable[[object], str] | None = None) -> None:
    """`data` as a JSON file ending in a newline, written atomically; `dumps` formats it (default: indent 2)."""
    text = dumps(data) if dumps else json.dumps(data, indent=2)
    atomic_write(Path(path), lambda tmp: tmp.write_text(text + "\n"))
