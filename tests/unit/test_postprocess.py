"""Label-map postprocessing: FLAIR-normal lesions dropped before the largest lesion is kept."""

import numpy as np
import pytest

from medseg.data.plan import Plan
from medseg.inference.postprocess import brain_z, drop_flair_normal, postprocess

SHAPE = (40, 40, 40)


@pytest.fixture
def scan() -> tuple[np.ndarray, np.ndarray]:
    """(2, X, Y, Z) flair + t1ce of a cubic 'brain' on a -3.6 background (z-scored storage), and a label map with
    a small FLAIR-bright tumour and a larger FLAIR-normal, T1ce-bright 'venous sinus' painted as enhancing."""
    rng = np.random.default_rng(0)
    image = np.full((2, *SHAPE), -3.6, np.float32)
    image[:, 4:36, 4:36, 4:36] = rng.normal(0, 0.3, (2, 32, 32, 32))
    labels = np.zeros(SHAPE, np.uint8)
    labels[8:14, 8:14, 8:14] = 2  # tumour: 216 voxels, FLAIR bright
    image[0, 8:14, 8:14, 8:14] += 3.0
    labels[20:34, 28:32, 10:30] = 4  # sinus: 1,120 voxels, FLAIR normal, T1ce bright
    image[1, 20:34, 28:32, 10:30] += 3.0
    return image, labels


def test_brain_z_scores_the_brain_over_its_own_voxels(scan):
    image, _ = scan
    z = brain_z(image[0])
    brain = image[0] > image[0].min()
    assert abs(z[brain].mean()) < 1e-4 and z[brain].std() == pytest.approx(1.0, rel=1e-3)


def test_flair_normal_lesions_are_dropped(scan):
    image, labels = scan
    out = drop_flair_normal(labels, brain_z(image[0]), 1.0)
    assert (out[8:14, 8:14, 8:14] == 2).all() and not (out == 4).any()
    assert np.array_equal(drop_flair_normal(labels, brain_z(image[0]), -5.0), labels)  # a low bar keeps both
    assert not drop_flair_normal(labels, brain_z(image[0]), 10.0).any()  # nothing is that bright: a tumour-free mask


def test_the_flair_check_comes_before_keep_largest(scan):
    image, labels = scan
    plan = Plan(("flair", "t1ce"), "brats2021", None, None, True, "nonzero", (16, 16, 16), lesion_flair_z=1.0)
    largest_only = postprocess(labels, image, plan, keep_largest=True, lesion_flair_z=None)
    assert (labels == 2).sum() == 216  # the input label map is not modified
    assert (largest_only == 4).sum() == 1120 and not (largest_only == 2).any()  # keep-largest keeps the sinus
    both = postprocess(labels, image, plan, keep_largest=True, lesion_flair_z=1.0)
    assert (both == 2).sum() == 216 and not (both == 4).any()
    no_flair = Plan(("t1", "t1ce"), "brats2021", None, None, True, "nonzero", (16, 16, 16))
    assert np.array_equal(postprocess(labels, image, no_flair, False, 1.0), labels)  # needs a FLAIR channel


def test_plans_round_trip_the_threshold_and_old_plans_have_none():
    plan = Plan(("flair", "t1ce"), "brats2013", (2.0, 2.0, 2.0), None, True, "nonzero", (64, 64, 64),
                lesion_flair_z=1.0)
    assert Plan.from_dict(plan.to_dict(), 'test').lesion_flair_z == 1.0
    old = plan.to_dict()
    del old["lesion_flair_z"]
    assert Plan.from_dict(old, 'test').lesion_flair_z is None


def test_edema_darker_than_the_brain_mean_is_dropped_but_not_the_core(scan):
    from medseg.inference.postprocess import drop_dark_edema

    image, labels = scan
    labels = labels.copy()
    labels[30:34, 4:8, 4:8] = 2  # 'edema' painted on FLAIR-dark tissue
    image = image.copy()
    image[0, 30:34, 4:8, 4:8] = -1.0
    labels[10:12, 10:12, 10:12] = 1  # a FLAIR-dark necrotic core inside the tumour
    image[0, 10:12, 10:12, 10:12] = -1.0
    plan = Plan(("flair", "t1ce"), "brats2021", None, None, True, "nonzero", (16, 16, 16))
    out = drop_dark_edema(labels, brain_z(image[0]), plan)
    assert not out[30:34, 4:8, 4:8].any() and (out[10:12, 10:12, 10:12] == 1).all()
    assert (out[8:14, 8:14, 8:14] > 0).sum() == 216 and (out == 4).sum() == 1120  # bright edema, enhancing kept
