"""medseg.inference.qc: disagreement of members, the flags' geometry rules, the fingerprint and its plan storage."""

import numpy as np
import pytest

from medseg.data import intensity
from medseg.data.plan import Plan
from medseg.inference import qc

REGIONS = ["wt", "tc", "et"]


def ball(shape, centre, radius) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    return ((grid - np.array(centre)[:, None, None, None]) ** 2).sum(0) <= radius**2


def members_of(masks: list[np.ndarray]) -> list[np.ndarray]:
    return [np.stack([m, m & ball(m.shape, (10, 10, 10), 3), m & ball(m.shape, (10, 10, 10), 2)]).astype(np.float32)
            for m in masks]


def test_identical_members_score_zero_and_disagreeing_members_do_not():
    lesion = ball((20, 20, 20), (10, 10, 10), 5)
    same = qc.disagreement(members_of([lesion, lesion]), (1, 1, 1), REGIONS)
    assert same["score"] == 0 and same["regions"]["wt"]["vvc"] == 0
    smaller = ball((20, 20, 20), (10, 10, 10), 4)
    differ = qc.disagreement(members_of([lesion, smaller]), (2, 2, 2), REGIONS)
    volumes = np.array([lesion.sum(), smaller.sum()]) * 8 / 1000  # mL at 2 mm voxels
    assert differ["regions"]["wt"]["volumes_ml"] == pytest.approx(volumes.tolist())
    assert differ["regions"]["wt"]["vvc"] == pytest.approx(volumes.std() / volumes.mean())
    assert differ["score"] > 0
    with pytest.raises(ValueError):
        qc.disagreement(members_of([lesion]), (1, 1, 1), REGIONS)


def test_uncertainty_is_the_members_sd():
    a, b = np.zeros((3, 4, 4, 4), np.float32), np.ones((3, 4, 4, 4), np.float32)
    np.testing.assert_allclose(qc.uncertainty([a, b]), 0.5)


def test_mirror_symmetric_lesions_are_told_from_one_sided_ones():
    brain = ball((40, 30, 30), (19.5, 15, 15), 14)
    one_sided = ball(brain.shape, (10, 15, 15), 4)
    assert qc.symmetric(one_sided, brain) == 0.0
    both = one_sided | ball(brain.shape, (29, 15, 15), 4)  # its mirror image across x = 19.5
    assert qc.symmetric(both, brain) > 0.9


def test_lesion_on_the_edge_of_the_imaged_field():
    brain = np.zeros((30, 30, 30), bool)
    brain[5:25, 5:25, 10:14] = True  # a thin slab: the rest of the head was not imaged
    lesion = np.zeros_like(brain)
    lesion[8:15, 8:15, 10:14] = True
    assert set(qc.touches_edge(lesion, brain)) == {"I", "S"}
    inner = np.zeros_like(brain)
    inner[8:15, 8:15, 11:13] = True
    assert qc.touches_edge(inner, brain) == []


def test_assess_flags_an_empty_prediction_and_a_lesion_outside_the_brain():
    image = np.zeros((2, 20, 20, 20), np.float32)
    image[:, 2:18, 2:18, 2:18] = 1.0
    empty = [np.zeros((3, 20, 20, 20), np.float32)] * 2
    assert "empty_prediction" in qc.assess(image, empty, (1, 1, 1), REGIONS, ["flair", "t1ce"], None, 0)["flags"]
    outside = np.zeros((20, 20, 20), bool)
    outside[0:6, 8:12, 8:12] = True  # half of it beyond the brain box
    result = qc.assess(image, members_of([outside, outside]), (1, 1, 1), REGIONS, ["flair", "t1ce"], None, 1)
    assert "outside_brain" in result["flags"]
    assert result["details"]["intensity_shift"].startswith("no training fingerprint")


def test_fingerprint_catches_swapped_channels():
    rng = np.random.default_rng(0)
    brain = ball((24, 24, 24), (12, 12, 12), 10)
    lesion = ball(brain.shape, (9, 12, 12), 4)

    def case():
        flair = np.where(brain, rng.normal(0, 1, brain.shape) + 2.5 * lesion, 0)  # bright lesion on FLAIR
        t1ce = np.where(brain, rng.gamma(2, 1, brain.shape) - 2, 0)  # skewed, lesion not bright
        return np.stack([flair, t1ce]).astype(np.float32)

    regions = np.stack([lesion, lesion, lesion])
    prints = [intensity.case_fingerprint(case(), regions, (1, 1, 1), REGIONS, ["flair", "t1ce"]) for _ in range(3)]
    fingerprint = intensity.merge_fingerprints(prints)
    right = qc.intensity_shift(intensity.case_fingerprint(case(), regions, (1, 1, 1), REGIONS, ["flair", "t1ce"]),
                               fingerprint)
    swapped = qc.intensity_shift(intensity.case_fingerprint(case()[::-1], regions, (1, 1, 1), REGIONS,
                                                     ["flair", "t1ce"]), fingerprint)
    assert swapped["lesion_contrast"] > qc.LESION_CONTRAST_SHIFT > right["lesion_contrast"]
    assert swapped["histogram"] > right["histogram"]


def test_plan_keeps_its_fingerprint_and_reads_plans_without_one():
    plan = Plan(("flair", "t1ce"), "brats2021", (2.0, 2.0, 2.0), None, True, "nonzero", (32, 32, 32),
                fingerprint={"version": 1, "cases": 2})
    stored = plan.to_dict()
    assert Plan.from_dict(stored, "x").fingerprint == {"version": 1, "cases": 2}
    del stored["fingerprint"]
    assert Plan.from_dict(stored, "x").fingerprint is None
