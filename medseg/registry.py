"""Looking names up in medseg's registries (blocks, nets, label conventions, bundled models, CAKES op spaces) with
one error style.

Every registry is a plain dict whose keys also make the `Literal` type that LightningCLI validates recipes
against (`Literal[tuple(REGISTRY)]`), so a name added to the dict is accepted everywhere at once.
"""

import difflib
from collections.abc import Iterable, Mapping
from typing import TypeVar

from medseg.errors import MedsegError

V = TypeVar("V")


def look_up(name: str, registry: Mapping[str, V], what: str, hint: str = "") -> V:
    """`registry[name]`, or a MedsegError that suggests the closest name and lists the valid ones (as MONAI's
    look_up_option); `hint` is appended (e.g. what else the option accepts)."""
    if name in registry:
        return registry[name]
    raise MedsegError(unknown(name, registry, what) + hint)


def unknown(name: str, choices: Iterable[str], what: str) -> str:
    """`unknown block 'pmsnc'; did you mean 'pmscn'? choose one of ['cakes', 'conv', …]`."""
    choices = sorted(choices)
    close = difflib.get_close_matches(str(name), choices, n=1)
    guess = f" did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {name!r};{guess} choose one of {choices}"


def look_up_all(names: Iterable[str], registry: Mapping[str, V], what: str) -> list[str]:
    """`names` if every one is registered, else the look-up error of the first that is not."""
    names = list(names)
    for name in names:
        look_up(name, registry, what)
    return names
