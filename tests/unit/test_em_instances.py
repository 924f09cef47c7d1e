"""EM neuron instances: targets from ids, watershed decoding, slab-wise prediction, and the CLI end to end."""

import json
from dataclasses import replace

import numpy as np
import pytest
import tifffile
import torch

from medseg.cli import main
from medseg.em.decode import DecodeParams, decode, remove_small
from medseg.em.loss import MaskedDiceBCE
from medseg.em.targets import IGNORE, affinities, boundaries, instance_targets
from medseg.evaluation.metrics import instance_metrics
from medseg.inference.chunked import relabel


def touching_blocks() -> np.ndarray:
    """(X, Y, Z) ids: two blocks touching along x (ids 1 and 2), a third (3) separated from 2 by a 0 layer."""
    ids = np.zeros((24, 12, 10), np.int64)
    ids[:8] = 1
    ids[8:15] = 2
    ids[16:] = 3
    return ids


def test_boundaries_mark_both_sides_of_a_contact_and_label_zero():
    b = boundaries(touching_blocks())
    assert b[7].all() and b[8].all()  # 1 | 2 contact: both sides
    assert b[15].all()  # the 0 layer
    assert not b[16].any() and not b[3].any() and not b[14].any()  # 3 only touches 0, which is boundary already


def test_boundary_target_is_one_channel_of_the_boundary_map():
    t = instance_targets(touching_blocks(), "boundary")
    assert t.shape == (1, 24, 12, 10)
    np.testing.assert_array_equal(t[0], boundaries(touching_blocks()))


def test_affinities_follow_the_ids_and_ignore_the_first_slice():
    a = affinities(touching_blocks())
    assert (a[0, 0] == IGNORE).all() and (a[1][:, 0] == IGNORE).all() and (a[2][..., 0] == IGNORE).all()
    assert (a[0, 8] == 0).all()  # voxel 8 (id 2) and its predecessor 7 (id 1)
    assert (a[0, 7] == 1).all() and (a[1, 3, 1:] == 1).all()
    assert (a[0, 16] == 0).all()  # 3 after the 0 layer: not the same neuron


def test_ignore_unlabelled_leaves_zero_voxels_out():
    t = instance_targets(touching_blocks(), "boundary", ignore_unlabelled=True)
    assert (t[0, 15] == IGNORE).all() and (t[0, 7] == 1).all()  # 0 layer ignored; the 1|2 contact still trains
    a = instance_targets(touching_blocks(), "affinity", ignore_unlabelled=True)
    assert (a[0, 15] == IGNORE).all() and (a[0, 16] == IGNORE).all()


def test_loss_gives_no_gradient_to_ignored_voxels():
    logits = torch.randn(1, 2, 8, 8, 8, requires_grad=True)
    target = torch.rand(1, 2, 8, 8, 8)
    target[..., :3] = IGNORE
    MaskedDiceBCE()(logits, target).backward()
    assert logits.grad[..., :3].abs().max() == 0 and logits.grad[..., 3:].abs().max() > 0


@pytest.mark.parametrize("kind", ["boundary", "affinity"])
def test_decoding_perfect_maps_recovers_the_neurons(kind):
    ids = touching_blocks()
    maps = instance_targets(ids, kind)
    maps[maps == IGNORE] = 1  # the first slice's affinities, as a network would predict them inside a neuron
    out = decode(maps, kind, DecodeParams(min_size=10, merge_below=0.5))  # true contacts score 1
    assert out.dtype == np.uint32 and out.shape == ids.shape
    assert len(np.unique(out)) == 3 and instance_metrics(out, ids)["adapted_rand_error"] < 0.01


def test_small_segments_join_a_neighbour():
    ids = np.array([1, 1, 1, 2, 3, 3, 3, 3])[:, None, None] * np.ones((8, 2, 2), np.int64)  # sizes 12, 4, 16
    np.testing.assert_array_equal(np.unique(remove_small(ids, 5)), [0, 1, 3])
    np.testing.assert_array_equal(np.unique(remove_small(ids, 100)), [0, 3])  # the largest always stays
    blocks = np.zeros((24, 12, 10), np.int64)
    blocks[:10], blocks[10:14], blocks[15:] = 1, 2, 3  # the middle neuron is ~5 voxels thick: ~600 voxels
    maps = instance_targets(blocks, "boundary")
    assert len(np.unique(decode(maps, "boundary", DecodeParams(merge_below=0.5)))) == 3
    out = decode(maps, "boundary", DecodeParams(merge_below=0.5, min_size=800))
    assert len(np.unique(out)) == 2 and out[12, 0, 0] in (out[0, 0, 0], out[20, 0, 0])


def test_agglomeration_merges_across_weak_contacts_only():
    """Two neurons split by a weak boundary (0.1) and a third behind a strong one (0.9): merging below 0.2 joins
    the first two and keeps the third; without merging the watershed keeps all three."""
    ids = touching_blocks()
    boundary = instance_targets(ids, "boundary")
    boundary[0, 7:9] = 0.1
    boundary[0, 15] = 0.9
    split = DecodeParams(boundary_threshold=0.05, min_distance=2, min_size=1, merge_below=None)
    kept = decode(boundary, "boundary", split)
    assert kept[0, 0, 0] != kept[12, 0, 0] != kept[20, 0, 0]
    merged = decode(boundary, "boundary", replace(split, merge_below=0.2))
    assert merged[0, 0, 0] == merged[12, 0, 0] != merged[20, 0, 0]
    assert len(np.unique(merged)) == 2


def test_decoding_an_untrained_output_gives_one_segment_not_zeros():
    out = decode(np.ones((1, 8, 8, 8), np.float32), "boundary")
    assert out.min() == 1 and out.max() == 1


def test_relabel_takes_the_written_id_of_the_largest_overlap():
    written = np.array([5, 5, 7, 7])[:, None, None] * np.ones((4, 2, 1), np.int64)  # (X, Y, 1) old slab's last section
    ids = np.array([1, 1, 2, 3])[:, None, None] * np.ones((4, 2, 3), np.int64)  # new slab: 3 sections, 1 overlapping
    out = relabel(ids, written, next_id=8)
    assert (out[0] == 5).all() and (out[2] == 7).all() and (out[3] == 7).all()  # 2 and 3 both lie in old 7
    out = relabel(ids, None, next_id=8)
    assert sorted(np.unique(out)) == [8, 9, 10]






FAST = ["--trainer.accelerator=cpu", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        "--trainer.max_steps=2", "--trainer.max_time=null", "--data.patch_size=[32, 32, 16]",
        "--data.samples_per_case=1", "--model.channels=[4, 8, 16]", "--model.strides=[1, 2, 2]",
        "--model.kernel_sizes=[3, 3, 3]"]














def test_evaluate_instances_reads_ids_whatever_the_convention(tmp_path, capsys):
    ids = touching_blocks().astype(np.uint32).transpose(2, 1, 0)  # (Z, Y, X) stacks
    tifffile.imwrite(tmp_path / "pred.tif", ids)
    tifffile.imwrite(tmp_path / "gt.tif", ids)
    assert main(["evaluate", str(tmp_path / "pred.tif"), str(tmp_path / "gt.tif"), "--instances",
                 "--json", str(tmp_path / "s.json")]) == 0
    scores = json.loads((tmp_path / "s.json").read_text())["cases"]
    assert next(iter(scores.values()))["instances"]["adapted_rand_error"] == pytest.approx(0.0, abs=1e-9)
