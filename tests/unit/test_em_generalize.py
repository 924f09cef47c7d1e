"""EM generalisation: long-range affinity targets, the decoders using them, decoding chosen on validation data and
stored in the plan, EM augmentation, and the voxel-size check (tiny arrays)."""

import numpy as np
import pytest
import torch
from monai import transforms as T
from monai.data import MetaTensor

from medseg.data.plan import Plan
from medseg.em.augment import RandMisalignd, RandMissingSectiond, RandMotionBlurd, em_augmentation, shift_edge
from medseg.em.decode import DecodeParams, decode
from medseg.em.targets import IGNORE, affinities, instance_targets
from medseg.evaluation.metrics import instance_metrics
from medseg.inference.voxels import resampling, zoom, zoom_back
from medseg.labels import get_convention
from medseg.training.decoding import cremi, tune


def touching_blocks() -> np.ndarray:
    """(X, Y, Z) ids: blocks 1 | 2 touching along x, 3 behind a 0 layer."""
    ids = np.zeros((24, 12, 10), np.int64)
    ids[:8], ids[8:15], ids[16:] = 1, 2, 3
    return ids


def perfect(ids: np.ndarray, offsets=(1, 3, 9)) -> np.ndarray:
    maps = instance_targets(ids, "affinity", offsets=offsets)
    maps[maps == IGNORE] = 1  # pairs leaving the volume, as a network predicts them inside a neuron
    return maps


def test_long_range_affinities_pair_voxels_offset_apart():
    ids = touching_blocks()
    a = affinities(ids, (1, 3))
    assert a.shape == (6, 24, 12, 10)
    np.testing.assert_array_equal(a[:3], affinities(ids))  # offset 1 first: the nearest-neighbour channels
    assert (a[3, :3] == IGNORE).all() and (a[3, 3] != IGNORE).all()  # x offset 3: the first 3 slices have no pair
    assert (a[3, 7] == 1).all() and (a[3, 14] == 1).all()  # 7|4 (both 1), 14|11 (both 2)
    assert (a[3, 10] == 0).all() and (a[3, 17] == 0).all()  # 10|7 (2 and 1), 17|14 (3 and 2 across the 0 layer)
    assert (a[5][..., :3] == IGNORE).all() and (a[5][:15, :, 3:] == 1).all() and (a[5][15, :, 3:] == 0).all()


def test_convention_with_offsets_has_three_channels_per_offset():
    c = get_convention("em_affinity_lr")
    assert c.offsets == (1, 3, 9) and len(c.regions) == 9 and c.instances
    assert instance_targets(touching_blocks(), "affinity", offsets=c.offsets).shape == (9, 24, 12, 10)
    unlabelled = instance_targets(touching_blocks(), "affinity", ignore_unlabelled=True, offsets=(1, 3))
    # x offset 3 pairs with a voxel in the 0 layer (x = 15): 15|12 and 18|15 are ignored, 16|13 (3 and 2) is not
    assert (unlabelled[3, 15] == IGNORE).all() and (unlabelled[3, 18] == IGNORE).all()
    assert (unlabelled[3, 16] == 0).all()


@pytest.mark.parametrize("method", ["boundary", "affinity", "waterz"])
def test_every_decoder_recovers_the_neurons_from_perfect_affinities(method):
    ids = touching_blocks()
    out = decode(perfect(ids), "affinity", DecodeParams(min_size=10, merge_below=0.5, method=method), (1, 3, 9))
    assert out.dtype == np.uint32 and out.shape == ids.shape
    assert instance_metrics(out, ids)["adapted_rand_error"] < 0.01 and out.max() == 3


@pytest.mark.parametrize("method", ["affinity", "waterz"])
def test_affinity_decoders_merge_fragments_with_high_affinity_and_keep_weak_contacts(method):
    ids = np.zeros((24, 12, 10), np.int64)
    ids[:12], ids[12:] = 1, 2  # two neurons touching at x = 12, no boundary voxels
    maps = perfect(ids)
    maps[:, 5] = 0.6  # a faint boundary inside neuron 1: the watershed splits it, the agglomeration must rejoin it
    params = DecodeParams(min_size=1, merge_below=0.5, method=method, boundary_threshold=0.3, min_distance=2)
    out = decode(maps, "affinity", params, (1, 3, 9))
    assert out.max() == 2 and instance_metrics(out, ids)["adapted_rand_error"] < 0.05


def test_affinity_decoders_refuse_boundary_models():
    with pytest.raises(Exception, match="needs an affinity model"):
        decode(np.zeros((1, 8, 8, 8), np.float32) + 0.1, "boundary", DecodeParams(method="waterz"))


def test_tuning_picks_the_setting_with_the_best_cremi_score():
    ids = touching_blocks()
    maps = perfect(ids, (1,))
    maps[0, 8] = 0.45  # the 1|2 contact only weakly predicted: merge thresholds above 0.55 join the two neurons
    best, rows = tune([(maps, ids)], "affinity", (1,), methods=["waterz"], min_distances=[3], thresholds=[0.3, 0.8])
    assert best.method == "waterz" and best.merge_below == 0.3
    assert rows[0]["cremi"] <= rows[1]["cremi"] and rows[1]["merge_below"] == 0.8 and rows[1]["voi_merge"] > 0.5
    assert cremi({"voi": 4.0, "adapted_rand_error": 0.25}) == 1.0


def test_the_plan_carries_the_decoding_and_older_plans_read_without_it():
    plan = Plan(("em",), "em_affinity_lr", None, (10.0, 10.0, 10.0), False, "all", (40, 40, 40),
                net={"channels": [4], "strides": [1], "kernel_sizes": [3], "block": "conv", "block_kwargs": {}},
                decode={"method": "waterz", "merge_below": 0.3})
    d = plan.to_dict()
    assert d["decode"] == {"method": "waterz", "merge_below": 0.3}
    assert Plan.from_dict(d, "x").decode == {"method": "waterz", "merge_below": 0.3}
    assert Plan.from_dict({k: v for k, v in d.items() if k != "decode"}, "x").decode is None


def patch(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    image = torch.from_numpy(rng.normal(size=(1, 16, 16, 16)).astype(np.float32))
    label = torch.arange(16 * 16 * 16, dtype=torch.int32).reshape(1, 16, 16, 16)  # every voxel its own id
    return {"image": MetaTensor(image), "label": MetaTensor(label)}


def test_missing_sections_change_whole_or_part_of_few_sections_only():
    d = patch()
    t = RandMissingSectiond(prob=1.0, max_sections=2)
    t.set_random_state(3)
    out = t(d)
    changed = (out["image"] != d["image"]).any(dim=(0, 1, 2))  # per z section
    assert 1 <= int(changed.sum()) <= 2
    assert torch.equal(out["label"], d["label"])
    for z in torch.nonzero(changed).ravel():
        assert torch.allclose(out["image"][..., z][out["image"][..., z] != d["image"][..., z]], d["image"].mean())


def test_misalignment_moves_image_and_label_together():
    d = patch()
    t = RandMisalignd(prob=1.0, max_shift=3)
    t.set_random_state(1)
    out = t(d)
    # every image voxel still sits with the label it had: the pairing of values is preserved
    pairs = dict(zip(d["label"].ravel().tolist(), d["image"].ravel().tolist(), strict=True))
    assert all(pairs[int(lab)] == float(img) for lab, img in zip(out["label"].ravel(), out["image"].ravel(),
                                                                 strict=True))
    assert not torch.equal(out["label"], d["label"])
    assert torch.equal(shift_edge(d["image"], 0, 0), d["image"].as_tensor())


def test_motion_blur_smooths_some_sections_along_a_line():
    d = patch()
    t = RandMotionBlurd(prob=1.0, max_sections=1, length=5)
    t.set_random_state(0)
    out = t(d)
    changed = (out["image"] != d["image"]).any(dim=(0, 1, 2))
    assert int(changed.sum()) == 1
    z = int(torch.nonzero(changed)[0])
    assert out["image"][..., z].std() < d["image"][..., z].std()  # blurred noise has a smaller spread


def test_em_augmentation_keeps_cubes_and_image_label_pairs():
    chain = T.Compose(em_augmentation(isotropic=True))
    rotations = [t for t in chain.transforms if isinstance(t, T.RandRotate90d)]
    assert sorted(t.spatial_axes for t in rotations) == [(0, 1), (0, 2), (1, 2)]  # 48 orientations
    chain.set_random_state(0)
    for seed in range(6):
        out = chain(patch(seed))
        assert out["image"].shape == (1, 16, 16, 16) and out["label"].shape == (1, 16, 16, 16)
    assert len([t for t in em_augmentation(isotropic=False) if isinstance(t, T.RandRotate90d)]) == 1


def test_voxel_size_check_resamples_only_when_sizes_differ():
    assert resampling(None, (10, 10, 10)) is None and resampling((10.05, 10, 10), (10, 10, 10)) is None
    assert resampling((20, 8, 8), (10, 10, 10)) == (0.8, 0.8, 2.0)  # (x, y, z) factors from (z, y, x) sizes
    image = MetaTensor(torch.rand(1, 20, 20, 10), affine=torch.diag(torch.tensor([8.0, 8, 20, 1])))
    zoomed = zoom(image, (0.8, 0.8, 2.0))
    assert zoomed.shape == (1, 16, 16, 20) and np.allclose(zoomed.affine.diagonal()[:3], 10.0)
    assert zoom_back(np.random.rand(3, 16, 16, 20).astype(np.float32), (20, 20, 10)).shape == (3, 20, 20, 10)
