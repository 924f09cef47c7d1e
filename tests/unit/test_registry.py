"""One look-up for every registry: the entry, or a MedsegError (a ValueError) with a suggestion and the names."""

import pytest

from medseg.errors import MedsegError
from medseg.registry import look_up, look_up_all


def test_look_up_returns_the_entry_or_suggests_the_closest_name():
    registry = {"unet": 1, "densenet": 2}
    assert look_up("densenet", registry, "architecture") == 2
    with pytest.raises(MedsegError, match=r"^unknown architecture 'dense_net'; did you mean 'densenet'\? "
                                         r"choose one of \['densenet', 'unet'\]$"):
        look_up("dense_net", registry, "architecture")
    with pytest.raises(MedsegError, match=r"^unknown architecture 'mlp'; choose one of"):  # nothing close: no guess
        look_up("mlp", registry, "architecture")


def test_look_up_error_is_a_value_error_and_takes_a_hint():
    with pytest.raises(ValueError, match=r"^unknown model 'bratz'; did you mean 'brats'\? choose one of \['brats'\], "
                                         r"or a path$"):
        look_up("bratz", {"brats": 1}, "model", hint=", or a path")


def test_look_up_all_names_the_first_unknown():
    assert look_up_all(["unet"], {"unet": 1}, "architecture") == ["unet"]
    with pytest.raises(MedsegError, match="unknown architecture 'vnet'"):
        look_up_all(["unet", "vnet", "mlp"], {"unet": 1}, "architecture")
