import json

import h5py
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
import torch
from monai import transforms as T

from medseg.data.datamodule import SegDataModule
from medseg.data.datasets import brats_cases, case_files, read_datalist
from medseg.data.io import itk_affine, read_volume
from medseg.data.transforms import LoadCased, augment, background_to_zero, preprocess
from medseg.errors import MedsegError
from medseg.labels import get_convention
from tests.conftest import BRATS_AFFINE, synthetic_case, write_case


def test_modality_suffix_must_match_exactly(tmp_path):
    case = tmp_path / "c1"
    case.mkdir()
    for m in ("t1", "t1ce", "seg"):
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), case / f"c1_{m}.nii.gz")
    picked = case_files(case, ["t1", "t1ce"], with_label=True)
    assert [p.rsplit("/", 1)[1] for p in picked["image"]] == ["c1_t1.nii.gz", "c1_t1ce.nii.gz"]
    with pytest.raises(MedsegError, match="missing modality 'flair'"):
        case_files(case, ["flair"])


def test_brats_folder_lists_every_case(brats_root):
    cases = brats_cases(brats_root, ["flair", "t1ce"])
    assert [c["case"] for c in cases] == ["case0", "case1", "case2"]
    assert all(c["label"].endswith("_seg.nii.gz") for c in cases)


def test_datalist_paths_are_relative_to_the_json(tmp_path, brats_root):
    case = brats_root / "case0"
    entry = {"image": [f"{case}/case0_flair.nii.gz", f"{case}/case0_t1ce.nii.gz"], "label": f"{case}/case0_seg.nii.gz"}
    sub = tmp_path / "lists"
    sub.mkdir()
    (sub / "local.nii.gz").symlink_to(case / "case0_flair.nii.gz")
    (sub / "dl.json").write_text(json.dumps({
        "training": [entry, {"image": "local.nii.gz", "label": entry["label"]}],
        "validation": [entry],
    }))
    train, val = read_datalist(sub / "dl.json")
    assert train[1]["image"] == [str((sub / "local.nii.gz").resolve())]
    assert len(val) == 1


def test_validation_case_is_held_out_reproducibly(brats_root):
    dm = SegDataModule(root=str(brats_root), modalities=["flair", "t1ce"], seed=3)
    train, val = dm.cases()
    assert len(train) == 2 and len(val) == 1
    assert {c["case"] for c in train + val} == {"case0", "case1", "case2"}
    assert dm.cases()[1] == val


def test_readers_agree_on_geometry(tmp_path):
    """NIfTI via nibabel and NRRD via SimpleITK give the same (X, Y, Z) array and RAS affine."""
    data = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, BRATS_AFFINE), tmp_path / "a.nii.gz")
    itk = sitk.ReadImage(str(tmp_path / "a.nii.gz"))
    sitk.WriteImage(itk, str(tmp_path / "a.nrrd"))
    a, b = read_volume(tmp_path / "a.nii.gz"), read_volume(tmp_path / "a.nrrd")
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-6)
    np.testing.assert_allclose(itk_affine(itk), BRATS_AFFINE, atol=1e-6)


def test_em_stacks_are_transposed_to_xyz_with_their_voxel_size(tmp_path):
    stack = np.random.default_rng(0).integers(0, 255, (4, 6, 8), dtype=np.uint8)  # (z, y, x)
    tifffile.imwrite(tmp_path / "s.tif", stack)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["main"] = stack
    for name in ("s.tif", "s.h5"):
        v = read_volume(tmp_path / name, voxel_size=(50, 4, 4))
        assert v.array.shape == (8, 6, 4)
        assert v.array[7, 5, 3] == stack[3, 5, 7]
        np.testing.assert_array_equal(np.diag(v.affine), [4, 4, 50, 1])


def test_hdf5_with_several_datasets_is_refused(tmp_path):
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a"] = np.zeros((4, 4, 4))
        f["b"] = np.zeros((4, 4, 4))
    with pytest.raises(MedsegError, match="exactly one dataset"):
        read_volume(tmp_path / "two.h5")


def test_background_shift_makes_constant_background_zero():
    image = torch.full((2, 4, 4, 4), -3.5)
    image[:, 1:3, 1:3, 1:3] = 2.0
    out = background_to_zero(image)
    assert out[:, 0, 0, 0].tolist() == [0.0, 0.0] and out[:, 1, 1, 1].tolist() == [5.5, 5.5]


def test_preprocessing_inverts_exactly_without_resampling(tmp_path):
    """Orientation + crop are undone voxel for voxel: a label passed through and back is unchanged."""
    case = write_case(tmp_path, "c", seed=1, affine=BRATS_AFFINE)
    files = {"image": [str(case / "c_flair.nii.gz"), str(case / "c_t1ce.nii.gz")], "label": str(case / "c_seg.nii.gz")}
    chain = T.Compose([LoadCased(2, get_convention("brats2021")),
                       *preprocess(["image", "label"], None, crop_foreground=True, normalize_nonzero=True)])
    out = chain(files)
    assert out["image"].shape[1:] == out["label"].shape[1:]
    assert out["image"].shape[1] < synthetic_case(1)[1].shape[0]  # cropped
    brain = out["image"][0] != 0
    assert abs(float(out["image"][0][brain].mean())) < 1e-4  # z-scored inside the brain
    restored = chain.inverse(out)["label"]
    np.testing.assert_array_equal(restored[0].numpy(), synthetic_case(1)[1])


def test_training_patches_have_patch_size_and_regions(brats_root):
    dm = SegDataModule(root=str(brats_root), modalities=["flair", "t1ce"], patch_size=[16, 16, 16],
                       samples_per_case=2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 2, 16, 16, 16)
    assert batch["label"].shape == (2, 3, 16, 16, 16)
    assert set(torch.unique(batch["label"]).tolist()) <= {0.0, 1.0}
    val = next(iter(dm.val_dataloader()))
    assert val["label"].shape[1] == 3 and val["image"].shape[2:] == val["label"].shape[2:]


def test_negative_patches_include_dark_tissue_but_never_background():
    """Negative centres come from the non-zero brain mask, not from `image > 0` of the z-scored image."""
    image = torch.zeros(2, 20, 20, 20)
    image[:, 2:18, 2:10] = -1.0  # dark tissue (z < 0)
    image[:, 2:18, 10:18] = 1.0  # bright tissue; the rest is background (exactly 0)
    label = torch.zeros(1, 20, 20, 20)
    label[0, 9, 9, 9] = 1
    chain = T.Compose(augment([1, 1, 1], 400, nonzero_foreground=True)[:4])  # pad, mask, crop, delete
    chain.set_random_state(0)
    centres = torch.stack([s["image"][0, 0, 0, 0] for s in chain({"image": image, "label": label})])
    assert (centres == -1).sum() > 50  # dark tissue is sampled as background
    assert (centres == 0).sum() == 0  # the empty background never is
    assert all("foreground" not in s for s in chain({"image": image, "label": label}))


@pytest.mark.parametrize("augmentation", ["light", "nnunet"])
def test_augmentation_keeps_patch_shape_and_binary_regions(augmentation):
    image = torch.randn(2, 24, 24, 24)
    label = (torch.rand(3, 24, 24, 24) > 0.7).float()
    chain = T.Compose(augment([16, 16, 16], 4, nonzero_foreground=True, augmentation=augmentation))
    chain.set_random_state(1)
    for sample in chain({"image": image, "label": label}):
        assert sample["image"].shape == (2, 16, 16, 16) and sample["label"].shape == (3, 16, 16, 16)
        assert set(torch.unique(sample["label"]).tolist()) <= {0.0, 1.0}  # nearest interpolation keeps regions
        assert torch.isfinite(sample["image"]).all()
