"""The robustness perturbations do what their names say, and the far-false-positive metric counts what it should."""

import numpy as np
import pytest
import torch
from monai import transforms as T
from monai.data import MetaTensor

from medseg.data.plan import Plan
from medseg.data.transforms import ClipNonzeroPercentilesd, augment, preprocess
from medseg.evaluation.robustness import (
    PERTURBATIONS,
    far_false_positive,
    healthy_mirror,
    perturb,
    score,
)

AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])  # the SRI grid's axis codes: L, P, S (first axis left-right)


@pytest.fixture
def case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 2-channel 'brain' (a ball of smooth positive intensities, zero outside) with a tumour on the low-x side."""
    x, y, z = np.meshgrid(*[np.arange(40)] * 3, indexing="ij")
    brain = (x - 20) ** 2 + (y - 20) ** 2 + (z - 20) ** 2 < 17**2
    rng = np.random.default_rng(0)
    image = np.stack([100 + 50 * np.sin(x / 5.0) + rng.normal(0, 5, x.shape), 200 + y * 2.0]).astype(np.float32)
    image = np.where(brain, image, 0).astype(np.float32)
    label = np.zeros(x.shape, dtype=np.int32)
    label[8:14, 16:24, 16:24] = 2
    label[10:12, 19:21, 19:21] = 4
    return image, label, brain


@pytest.mark.parametrize("name", ["gamma 0.7", "gamma 1.5", "bias field 0.3", "noise 5%", "blur 1 mm",
                                  "1x1x3 mm and back"])
def test_intensity_perturbations_change_the_brain_but_not_the_grid(case, name):
    image, label, brain = case
    out, out_label, within = perturb(name, image, label, brain, [1, 1, 1], seed=0, affine=AFFINE)
    assert out.shape == image.shape and out.dtype == np.float32
    assert np.array_equal(out_label, label) and within is None
    assert np.abs(out[:, brain] - image[:, brain]).mean() > 0.5  # the brain's intensities changed
    assert not out[:, ~brain].any()  # a skull-stripped scan keeps its zero background
    assert (out >= 0).all()


def test_gamma_is_monotonic_and_keeps_the_range(case):
    image, label, brain = case
    out, _, _ = perturb("gamma 1.5", image, label, brain, [1, 1, 1], seed=0)
    c = image[0][brain]
    order = np.argsort(c)
    assert np.all(np.diff(out[0][brain][order]) >= -1e-3)  # same order of intensities
    assert np.isclose(out[0].max(), image[0].max(), rtol=1e-4)  # min-max range kept (MONAI AdjustContrast)


def test_perturbations_are_seeded(case):
    image, label, brain = case
    a = perturb("bias field 0.3", image, label, brain, [1, 1, 1], seed=3)[0]
    b = perturb("bias field 0.3", image, label, brain, [1, 1, 1], seed=3)[0]
    assert np.array_equal(a, b)


def test_thick_slices_smooth_only_across_slices(case):
    image, label, brain = case
    out = perturb("1x1x3 mm and back", image, label, brain, [1, 1, 1], seed=0)[0]
    inner = brain & np.roll(brain, 6, axis=2) & np.roll(brain, -6, axis=2)  # away from the zero background
    # channel 1 varies along y only: averaging slices (z) leaves it unchanged inside the brain
    assert np.allclose(out[1][inner], image[1][inner], atol=1e-3)
    assert not np.allclose(out[0][inner], image[0][inner], atol=1e-3)  # channel 0 has noise along z


def test_slab_zeroes_outside_3cm_through_the_tumour(case):
    image, label, brain = case
    out, _, within = perturb("3 cm slab (FOV)", image, label, brain, [1, 1, 1], seed=0)
    kept = np.nonzero(within.any(axis=(0, 1)))[0]
    assert len(kept) == 30 and kept.min() == 5 and kept.max() == 34  # 30 slices centred on the tumour (z 16..23)
    assert not out[:, ~within].any() and np.array_equal(out[:, within], image[:, within])


def test_skull_strip_margins(case):
    image, label, brain = case
    tight = perturb("skull strip -3 mm", image, label, brain, [1, 1, 1], seed=0)[0]
    loose = perturb("skull strip +3 mm", image, label, brain, [1, 1, 1], seed=0)[0]
    assert (tight != 0).any(axis=0).sum() < brain.sum() < (loose != 0).any(axis=0).sum()
    assert np.array_equal(loose[:, brain], image[:, brain])  # the brain itself is untouched


def test_healthy_mirror_removes_a_one_sided_tumour(case):
    image, label, brain = case
    img, lab, side = healthy_mirror(image, label, brain, AFFINE)
    assert side == 1 and not lab.any()  # the tumour (low x) is replaced by the mirrored high-x half
    assert np.array_equal(img[:, 3:20], img[:, 36:19:-1])  # mirrored about the brain's centre (x = 19.5)


def test_far_false_positive_counts_only_far_voxels():
    truth = np.zeros((30, 30, 30), dtype=bool)
    truth[5:10, 5:10, 5:10] = True
    pred = truth.copy()
    pred[5:10, 5:10, 10:14] = True  # 4 voxels beyond the edge: near, not counted
    pred[20:23, 20:23, 20:23] = True  # 27 voxels far away
    assert far_false_positive(pred, truth) == 27
    assert far_false_positive(pred, np.zeros_like(truth)) == pred.sum()  # empty reference: every voxel
    s = score(np.stack([pred, pred, pred]), np.stack([truth, truth, truth]), ["wt", "tc", "et"], 0.008)
    assert s["wt_far_fp_ml"] == pytest.approx(27 * 0.008)
    assert s["dice_wt"] == pytest.approx(2 * 125 / (125 + 125 + 100 + 27))


def test_every_perturbation_runs(case):
    image, label, brain = case
    for name in PERTURBATIONS:
        out, lab, _ = perturb(name, image, label, brain, [1, 1, 1], seed=0, affine=AFFINE)
        assert out.shape == image.shape and lab.shape == label.shape


def test_clip_percentiles_keeps_background_and_clips_outliers(case):
    image, _, brain = case
    spiky = image.copy()
    spiky[0, 20, 20, 20] = 1e5  # one bright vessel
    out = ClipNonzeroPercentilesd()({"image": MetaTensor(torch.from_numpy(spiky))})["image"].numpy()
    assert not out[:, ~brain].any() and (out[:, brain] != 0).all()
    assert out[0].max() < 300


def test_old_plans_preprocess_without_clipping():
    old = Plan.from_dict({"modalities": ["flair", "t1ce"], "label_convention": "brats2013", "spacing": [2, 2, 2],
                          "voxel_size": None, "crop_foreground": True, "normalize": "nonzero",
                          "patch_size": [64, 64, 64], "arch": "unet", "net": {}, "format": 3}, "test")
    assert not any(isinstance(t, ClipNonzeroPercentilesd) for t in old.preprocessing())
    new = Plan.from_dict({**old.to_dict(), "normalize": "nonzero_clip"}, "test")
    assert any(isinstance(t, ClipNonzeroPercentilesd) for t in new.preprocessing())
    assert old.key() != new.key()  # cached cases of one are not reused for the other
    steps = preprocess(["image"], None, False, True)
    assert not any(isinstance(t, ClipNonzeroPercentilesd) for t in steps)


def test_sites_augmentation_draws_more_brain_patches(case):
    image, label, _ = case
    regions = torch.from_numpy(np.stack([label > 0, np.isin(label, [1, 4]), label == 4]).astype(np.float32))
    chain = T.Compose(augment([16, 16, 16], 30, True, "sites", negatives=2)).set_random_state(0)
    out = chain({"image": MetaTensor(torch.from_numpy(image)), "label": MetaTensor(regions)})
    assert len(out) == 30 and out[0]["image"].shape == (2, 16, 16, 16)
    centred = sum(bool(o["label"][0, 8, 8, 8] > 0) for o in out)  # flips keep the centre voxel in place
    assert centred < 20  # about a third (pos 1 : neg 2), well under the half of pos 1 : neg 1


def test_cli_rejects_an_unknown_perturbation(tmp_path, capsys):
    from medseg.cli import main

    assert main(["robustness", "--datalist", str(tmp_path / "none.json"), "--perturbations", "gamma 9"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("error: unknown perturbations ['gamma 9']") and "Traceback" not in err


def test_robust_normalisation_uses_median_and_iqr(case):
    from medseg.data.transforms import RobustNormalizeNonzerod

    image, label, brain = case
    tumour = image.copy()
    tumour[0][label > 0] = 1000.0  # a bright lesion: shifts mean and sd, barely median and IQR
    out = RobustNormalizeNonzerod()({"image": MetaTensor(torch.from_numpy(tumour))})["image"].numpy()
    assert not out[:, ~brain].any()
    q1, median, q3 = np.percentile(out[0][brain], [25, 50, 75])
    assert abs(median) < 1e-3 and (q3 - q1) == pytest.approx(1.349, rel=1e-3)
    plain = RobustNormalizeNonzerod()({"image": MetaTensor(torch.from_numpy(image))})["image"].numpy()
    normal = brain & (label == 0)
    assert np.abs(out[0][normal] - plain[0][normal]).mean() < 0.05  # normal tissue keeps its values


def test_rand_healthy_mirror_makes_a_tumour_free_training_brain(case):
    from medseg.data.transforms import RandHealthyMirrord

    image, label, brain = case
    regions = np.stack([label > 0, label == 4, label == 4]).astype(np.float32)
    data = {"image": MetaTensor(torch.from_numpy(image)), "label": MetaTensor(torch.from_numpy(regions))}
    out = RandHealthyMirrord(1.0)(data)
    assert isinstance(out["image"], MetaTensor) and out["image"].shape == image.shape
    assert out["label"].sum() == 0  # the one-sided tumour is gone, image and label mirrored together
    assert np.array_equal(out["image"].numpy()[:, 3:20], out["image"].numpy()[:, 36:19:-1])
    mirrored = out["image"].numpy()
    inside = mirrored[:, (mirrored != 0).any(axis=0)]
    assert np.allclose(inside.mean(axis=1), 0, atol=1e-4) and np.allclose(inside.std(axis=1), 1, atol=1e-3)
    assert RandHealthyMirrord(0.0)(data) is data  # never applied at probability 0
    assert np.array_equal(data["image"].numpy(), image)  # the input is not modified


def test_init_weights_starts_from_the_bundled_model_and_checks_the_net():
    from medseg.errors import MedsegError
    from medseg.models import resolve_model
    from medseg.models.loading import load_checkpoint
    from medseg.training.module import SegModule

    kwargs = {"modalities": ["flair", "t1ce"], "label_convention": "brats2013", "block": "pmscn"}
    module = SegModule(**kwargs, block_kwargs={"inner_act": True}, init_weights="brats")
    _, state = load_checkpoint(resolve_model("brats"))
    assert all(torch.equal(module.net.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(MedsegError, match="init_weights"):
        SegModule(**kwargs, init_weights="brats")  # the default PmSCn block differs from the bundled one's
