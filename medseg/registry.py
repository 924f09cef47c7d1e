"""Looking names up in medseg's registries (blocks, nets, label conventions) with one error style.

Every registry is a plain dict whose keys also make the `Literal` type that LightningCLI validates recipes
against (`Literal[tuple(REGISTRY)]`), so a name added to the dict is accepted everywhere at once.
"""

import difflib
from collections.abc import Mapping
from typing import TypeVar

V = TypeVar("V")


def look_up(name: str, registry: Mapping[str, V], what: str) -> V:
    """`registry[name]`, or a ValueError that suggests the closest name (like MONAI's look_up_option)."""
    if name in registry:
        return registry[name]
    choices = sorted(registry)
    close = difflib.get_close_matches(str(name), choices, n=1)
    hint = f" did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown {what} {name!r};{hint} choose one of {choices}")
