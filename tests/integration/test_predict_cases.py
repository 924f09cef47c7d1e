"""`medseg predict` beyond one case: shuffled channel files, folders of cases, probabilities, TTA, previews, plans."""

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.cli import main
from medseg.data.plan import FORMAT
from medseg.errors import MedsegError
from medseg.models import bundled_path
from medseg.models.loading import build_model, load_checkpoint
from tests.conftest import synthetic_case, write_case


def mask(path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def test_shuffled_channel_files_give_the_same_mask(tmp_path, tiny_ckpt):
    case = write_case(tmp_path, "c", seed=5)
    flair, t1ce = case / "c_flair.nii.gz", case / "c_t1ce.nii.gz"
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    assert main(["predict", str(flair), str(t1ce), "--model", str(tiny_ckpt), "--output", str(a)]) == 0
    assert main(["predict", str(t1ce), str(flair), "--model", str(tiny_ckpt), "--output", str(b)]) == 0
    np.testing.assert_array_equal(mask(a), mask(b))


def test_folder_of_cases_skips_finished_ones_and_reports_the_broken_one(tmp_path, tiny_ckpt, capsys):
    cases = tmp_path / "in"
    for i in range(3):
        write_case(cases, f"case{i}", seed=10 + i, with_label=False)
    (cases / "case1" / "case1_t1ce.nii.gz").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert main(["predict", str(cases), "--model", str(tiny_ckpt), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "case1" in err and "case0" not in err.split("failed:")[0]
    assert sorted(p.name for p in out.iterdir()) == ["case0.nii.gz", "case2.nii.gz"]
    for i in (0, 2):
        written, source = nib.load(out / f"case{i}.nii.gz"), nib.load(cases / f"case{i}" / f"case{i}_flair.nii.gz")
        np.testing.assert_array_equal(written.get_sform(), source.get_sform())
        assert written.shape == source.shape
    before = (out / "case0.nii.gz").stat().st_mtime_ns
    assert main(["predict", str(cases), "--model", str(tiny_ckpt), "--output", str(out)]) == 2  # case1 still broken
    assert "2 skipped" in capsys.readouterr().out
    assert (out / "case0.nii.gz").stat().st_mtime_ns == before


def test_probabilities_threshold_to_the_mask_and_keep_the_header(tmp_path, tiny_ckpt):
    case = write_case(tmp_path, "p", seed=7, with_label=False)
    out, probs = tmp_path / "m.nii.gz", tmp_path / "probs.nii.gz"
    assert main(["predict", str(case), "--model", str(tiny_ckpt), "--output", str(out),
                 "--save-probabilities", str(probs)]) == 0
    img, ref = nib.load(probs), nib.load(case / "p_flair.nii.gz")
    assert img.shape == (*ref.shape, 3) and img.get_data_dtype() == np.float32
    np.testing.assert_array_equal(img.get_sform(), ref.get_sform())
    np.testing.assert_array_equal(img.get_qform(), ref.get_qform())
    p = np.asarray(img.dataobj)
    assert p.min() >= 0 and p.max() <= 1
    regions = np.stack([np.isin(mask(out), v) for v in ([1, 2, 4], [1, 4], [4])])  # brats2021 wt, tc, et
    np.testing.assert_array_equal(np.moveaxis(p > 0.5, -1, 0), regions)  # every region, every voxel


def test_tta_preview_and_stats(tmp_path, tiny_ckpt):
    case = write_case(tmp_path, "t", seed=8, with_label=False)
    out, png, stats = tmp_path / "m.nii.gz", tmp_path / "p.png", tmp_path / "s.json"
    assert main(["predict", str(case), "--model", str(tiny_ckpt), "--output", str(out), "--tta",
                 "--preview", str(png), "--stats", str(stats)]) == 0
    assert mask(out).shape == nib.load(case / "t_flair.nii.gz").shape
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = json.loads(stats.read_text())
    assert set(written) == {"wt", "tc", "et", "qc"}
    assert written["qc"]["details"]["disagreement"]["members"] == 8  # --tta: the 8 mirrorings


def test_tta_averages_the_mirrorings():
    from medseg.inference.predictor import mirrored

    net = torch.nn.Conv3d(1, 1, 3, padding=1)
    x = torch.randn(1, 1, 6, 6, 6)
    with torch.no_grad():
        out = mirrored(net, x)
        expected = sum(torch.flip(net(torch.flip(x, a)), a).sigmoid() for a in
                       [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]) / 8
    torch.testing.assert_close(out.sigmoid(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("version, message", [(FORMAT + 1, "upgrade medseg"), (None, "format None")])
def test_checkpoint_plan_format_is_checked(tmp_path, tiny_ckpt, version, message):
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    ckpt["medseg"]["format"] = version
    path = tmp_path / "other.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(MedsegError, match=message):
        load_checkpoint(path)


def test_plan_round_trips_through_the_checkpoint(tiny_ckpt):
    plan, state = load_checkpoint(tiny_ckpt)
    assert plan.format == FORMAT and plan.modalities == ("flair", "t1ce") and plan.regions == ["wt", "tc", "et"]
    assert plan.to_dict()["net"] == dict(plan.net) and state


def test_format_2_pmscn_checkpoints_keep_their_inner_norms(tmp_path, tiny_ckpt):
    """PmSCn's streams became linear by default in format 3; a model trained before (the bundled brats model among
    them) must still be built with the norm + act inside its streams that its weights belong to."""
    plan, state = load_checkpoint(bundled_path("brats"))
    assert plan.net["block"] == "pmscn" and plan.net["block_kwargs"] == {"inner_act": True}
    build_model(plan, state, "brats")  # strict state_dict load: the inner norms' weights have their modules
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    ckpt["medseg"]["net"] = {**ckpt["medseg"]["net"], "block": "pmscn", "block_kwargs": {"m": 1}}
    for version, expected in [(2, {"inner_act": True, "m": 1}), (FORMAT, {"m": 1})]:
        ckpt["medseg"]["format"] = version
        torch.save(ckpt, tmp_path / "p.ckpt")
        assert load_checkpoint(tmp_path / "p.ckpt")[0].net["block_kwargs"] == expected


def test_unknown_model_name_suggests_the_closest(tmp_path, capsys):
    case = write_case(tmp_path, "u", seed=9, with_label=False)
    assert main(["predict", str(case), "--model", "bratz"]) == 2
    assert "unknown model 'bratz'; did you mean 'brats'?" in capsys.readouterr().err


def test_inputs_are_untouched_by_a_folder_run(tmp_path, tiny_ckpt):
    cases = tmp_path / "in"
    write_case(cases, "k", seed=3, with_label=False)
    copy = shutil.copytree(cases, tmp_path / "copy")
    assert main(["predict", str(cases), "--model", str(tiny_ckpt), "--output", str(tmp_path / "o")]) == 0
    for f in copy.rglob("*.nii.gz"):
        assert f.read_bytes() == (cases / f.relative_to(copy)).read_bytes()


def test_models_lists_the_bundled_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "brats (default for MRI)" in out and "em-membrane (default for EM)" in out
    assert "inputs:  flair, t1ce" in out
    assert "unet with pmscn blocks" in out and "only the largest connected lesion is kept" in out
    assert "FLAIR-dark edema and lesions whose FLAIR 75th percentile is below 1.0 brain SDs are dropped" in out
    assert "ensemble: the mean of 2 networks' probabilities (brats.pt, brats-mirror.pt" in out


def test_the_bundled_brats_model_is_an_ensemble_of_its_members(tmp_path):
    """`--model brats` loads both bundled networks; its probabilities are their mean, on any input path
    (predict_case, and the image-level path `medseg robustness` uses)."""
    from monai.data import MetaTensor

    from medseg.inference.ensemble import Ensemble, load_predictor
    from medseg.models import bundled_members

    predictor = load_predictor("brats", device="cpu")
    assert isinstance(predictor, Ensemble) and [p.source for p in predictor.members] == bundled_members("brats")
    assert predictor.keep_largest and predictor.lesion_flair_z == 1.0
    case = write_case(tmp_path, "e", seed=3, with_label=False)
    files = [str(case / "e_flair.nii.gz"), str(case / "e_t1ce.nii.gz")]
    mean = predictor.predict_case(files).probabilities
    each = [p.predict_case(files).probabilities for p in predictor.members]
    np.testing.assert_allclose(mean, (each[0] + each[1]) / 2, atol=1e-6)
    image = nib.load(files[0])
    stacked = np.stack([np.asarray(nib.load(f).dataobj, np.float32) for f in files])
    maps, _ = predictor.probabilities(MetaTensor(torch.from_numpy(stacked), affine=torch.as_tensor(image.affine)),
                                      Path(files[0]))
    np.testing.assert_allclose(maps, mean, atol=1e-5)


def test_predict_without_model_uses_the_bundled_one(tmp_path, monkeypatch):
    case = write_case(tmp_path, "d", seed=4, with_label=False)
    monkeypatch.chdir(tmp_path)
    assert main(["predict", str(case)]) == 0
    written, source = nib.load(tmp_path / "d_pred.nii.gz"), nib.load(case / "d_flair.nii.gz")
    assert written.shape == source.shape
    np.testing.assert_array_equal(written.get_sform(), source.get_sform())
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2, 4}


def far_cube_case(tmp_path: Path, name: str, modality: str, value: float) -> tuple[Path, tuple, np.ndarray]:
    """A synthetic case whose `modality` has a 3x3x3 cube of `value` away from the lesion, inside the brain;
    returns the case folder, the cube's centre and the lesion's label map."""
    from scipy import ndimage

    case = write_case(tmp_path, name, seed=5, with_label=False)
    path = case / f"{name}_{modality}.nii.gz"
    image = nib.load(path)
    data = np.asarray(image.dataobj).copy()
    _, label = synthetic_case(5)
    far = (ndimage.distance_transform_edt(label == 0) > 6) & (ndimage.binary_erosion(data > 0, iterations=3))
    x, y, z = np.argwhere(far)[0]
    data[x - 1 : x + 2, y - 1 : y + 2, z - 1 : z + 2] = value
    nib.save(nib.Nifti1Image(data, image.affine, image.header), path)
    return case, (x, y, z), label


def predicted(tmp_path: Path, case: Path, model: Path, *extra: str) -> np.ndarray:
    out = tmp_path / f"mask{len(list(tmp_path.glob('mask*')))}.nii.gz"
    assert main(["predict", str(case), "--model", str(model), "--output", str(out), *extra]) == 0
    return np.asarray(nib.load(out).dataobj)


def with_plan(tmp_path: Path, model: Path, **plan) -> Path:
    """A copy of the checkpoint with these plan fields set."""
    ckpt = torch.load(model, weights_only=True)
    ckpt["medseg"].update(plan)
    out = tmp_path / f"{'-'.join(plan)}.ckpt"
    torch.save(ckpt, out)
    return out


def test_keep_largest_drops_a_stray_blob_and_follows_the_model(tmp_path, oracle):
    """The oracle paints WT where flair is bright: a small bright cube away from the lesion is a second component.
    --keep-largest drops it and keeps the lesion's labels; the model's plan sets the default."""
    from scipy import ndimage

    case, (x, y, z), _ = far_cube_case(tmp_path, "b", "flair", 250.0)
    plain = predicted(tmp_path, case, oracle["native"])
    kept = predicted(tmp_path, case, oracle["native"], "--keep-largest")
    assert ndimage.label(plain > 0, structure=np.ones((3, 3, 3)))[1] >= 2 and plain[x, y, z] > 0
    assert ndimage.label(kept > 0, structure=np.ones((3, 3, 3)))[1] == 1 and kept[x, y, z] == 0
    lesion = kept > 0
    np.testing.assert_array_equal(kept[lesion], plain[lesion])  # the lesion's labels are untouched
    model = with_plan(tmp_path, oracle["native"], keep_largest=True)
    np.testing.assert_array_equal(predicted(tmp_path, case, model), kept)
    np.testing.assert_array_equal(predicted(tmp_path, case, model, "--no-keep-largest"), plain)


def test_lesion_flair_check_drops_an_enhancing_blob_with_normal_flair(tmp_path, oracle):
    """The oracle paints enhancing tumour where t1ce is bright: a t1ce-bright cube with normal FLAIR (a venous
    sinus) is painted without the check and dropped by --lesion-flair-z (or the model's plan); `off` overrides."""
    case, (x, y, z), label = far_cube_case(tmp_path, "s", "t1ce", 300.0)
    plain = predicted(tmp_path, case, oracle["native"])
    checked = predicted(tmp_path, case, oracle["native"], "--lesion-flair-z", "1.0")
    assert plain[x, y, z] == 4 and checked[x, y, z] == 0
    lesion = (label > 0) & (plain > 0)
    np.testing.assert_array_equal(checked[lesion], plain[lesion])  # the FLAIR-bright lesion stays
    model = with_plan(tmp_path, oracle["native"], lesion_flair_z=1.0)
    np.testing.assert_array_equal(predicted(tmp_path, case, model), checked)
    np.testing.assert_array_equal(predicted(tmp_path, case, model, "--lesion-flair-z", "off"), plain)


def test_plans_written_before_keep_largest_load_without_it(tmp_path, tiny_ckpt):
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    del ckpt["medseg"]["keep_largest"]
    path = tmp_path / "older.ckpt"
    torch.save(ckpt, path)
    assert load_checkpoint(path)[0].keep_largest is False


def test_output_that_is_not_an_image_name_is_a_folder(tmp_path, tiny_ckpt):
    """`--output preds/` or `--output preds` (nnU-Net's -o): a folder, made if needed, holding <case>.nii.gz."""
    case = write_case(tmp_path, "f", seed=6, with_label=False)
    for output in (f"{tmp_path / 'slash'}/", str(tmp_path / "plain"), str(tmp_path / "exists")):
        (tmp_path / "exists").mkdir(exist_ok=True)
        assert main(["predict", str(case), "--model", str(tiny_ckpt), "--output", output]) == 0
        mask = Path(output) / "f.nii.gz"
        assert nib.load(mask).shape == nib.load(case / "f_flair.nii.gz").shape
    assert main(["predict", str(case), "--model", str(tiny_ckpt), "--output", str(tmp_path / "m.nii.gz")]) == 0
    assert (tmp_path / "m.nii.gz").is_file()
