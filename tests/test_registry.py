from typing import get_args

import pytest

from medseg.blocks import BLOCKS, BlockKind
from medseg.labels import CONVENTIONS, ConventionName
from medseg.nets import NETS, ArchKind
from medseg.registry import look_up


@pytest.mark.parametrize("registry, literal", [(BLOCKS, BlockKind), (NETS, ArchKind), (CONVENTIONS, ConventionName)],
                         ids=["blocks", "nets", "conventions"])
def test_each_literal_lists_exactly_its_registry(registry, literal):
    assert get_args(literal) == tuple(registry)


def test_look_up_returns_the_entry_or_suggests_the_closest_name():
    registry = {"unet": 1, "densenet": 2}
    assert look_up("densenet", registry, "architecture") == 2
    with pytest.raises(ValueError, match=r"^unknown architecture 'dense_net'; did you mean 'densenet'\? "
                                         r"choose one of \['densenet', 'unet'\]$"):
        look_up("dense_net", registry, "architecture")
    with pytest.raises(ValueError, match=r"^unknown architecture 'mlp'; choose one of"):  # nothing close: no guess
        look_up("mlp", registry, "architecture")
