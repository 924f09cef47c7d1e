import numpy as np
import pytest

from medseg.data.io import Volume, read_volume, write_mask
from medseg.labels import CONVENTIONS, get_convention


@pytest.mark.parametrize(
    "name, label, expected",
    [
        ("brats2021", [0, 1, 2, 4], {"wt": [0, 1, 1, 1], "tc": [0, 1, 0, 1], "et": [0, 0, 0, 1]}),
        ("brats2013", [0, 1, 2, 3, 4], {"wt": [0, 1, 1, 1, 1], "tc": [0, 1, 0, 1, 1], "et": [0, 0, 0, 0, 1]}),
        ("brats2023", [0, 1, 2, 3], {"wt": [0, 1, 1, 1], "tc": [0, 1, 0, 1], "et": [0, 0, 0, 1]}),
        ("msd", [0, 1, 2, 3], {"wt": [0, 1, 1, 1], "tc": [0, 0, 1, 1], "et": [0, 0, 0, 1]}),
        ("em_membrane", [0, 255, 7], {"membrane": [1, 0, 0]}),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_regions_follow_the_convention(name, label, expected):
    regions = get_convention(name).to_regions(np.array(label)[None])
    assert regions.tolist() == list(expected.values())


@pytest.mark.parametrize("name", ["brats2021", "brats2023", "msd"])
def test_decoding_regions_gives_back_the_labels(name):
    conv = get_convention(name)
    labels = np.array(sorted(conv.labels))
    assert conv.from_regions(conv.to_regions(labels[None])).tolist() == labels.tolist()


def test_brats2013_decodes_tumour_core_as_necrosis():
    conv = get_convention("brats2013")
    decoded = conv.from_regions(conv.to_regions(np.array([0, 1, 2, 3, 4])[None]))
    assert decoded.tolist() == [0, 1, 2, 1, 4]


def test_values_outside_the_convention_are_named():
    with pytest.raises(ValueError, match=r"case7_seg.*\[3\].*brats2021"):
        get_convention("brats2021").check(np.array([0, 1, 3, 4]), "case7_seg.nii.gz")
    get_convention("brats2013").check(np.array([0, 1, 2, 4]), "ok")  # BraTS 2021 labels fit brats2013


def test_em_accepts_instance_ids_but_not_negative_or_fractional_values():
    conv = get_convention("em_membrane")
    conv.check(np.array([0, 1, 87, 132]), "ok")
    with pytest.raises(ValueError, match=r"ids.h5: no voxel has label 0.*target would be empty"):
        conv.check(np.array([1, 87, 132]), "ids.h5")  # an id volume without boundaries: nothing to learn
    with pytest.raises(ValueError):
        conv.check(np.array([0, -1]), "bad")
    with pytest.raises(ValueError):
        conv.check(np.array([0.5]), "bad")


def test_unknown_convention_lists_choices():
    with pytest.raises(ValueError, match=r"did you mean 'brats2013'\? choose one of \[.*'brats2023'"):
        get_convention("brats_2013")
    assert set(CONVENTIONS) == {"brats2021", "brats2013", "brats2023", "msd", "em_membrane", "em_boundary",
                                "em_affinity"}


def test_em_masks_are_written_in_the_documented_convention(tmp_path):
    """0 = membrane, 255 = interior (ISBI 2012's labels), so a written mask reads back as the same regions."""
    conv = get_convention("em_membrane")
    masks = (np.random.default_rng(0).random((1, 5, 4, 3)) > 0.7).astype(np.uint8)  # (R=1, X, Y, Z)
    label = conv.from_regions(masks)
    assert set(np.unique(label)) == {0, 255}
    assert ((label == 0) == masks[0].astype(bool)).all()
    reference = Volume(np.zeros((5, 4, 3), np.uint8), np.eye(4), None, tmp_path / "em.tif")
    write_mask(label, reference, tmp_path / "mask.tif")
    read_back = read_volume(tmp_path / "mask.tif").array  # (X, Y, Z), as training reads a label stack
    conv.check(read_back, "mask.tif")
    np.testing.assert_array_equal(conv.to_regions(read_back[None]), masks)
