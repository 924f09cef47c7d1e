import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.data.checks import check_label_grid, read_header
from medseg.data.datamodule import SegDataModule
from medseg.data.io import read_volume
from medseg.errors import MedsegError
from tests.conftest import BRATS_AFFINE, write_case


def relabel(case_dir, affine=None, mapping=None) -> str:
    """Rewrite a case's label in place: another affine (same voxels) and/or label values mapped."""
    path = next(case_dir.glob("*_seg.nii.gz"))
    img = nib.load(path)
    label = np.asarray(img.dataobj)
    for old, new in (mapping or {}).items():
        label = np.where(np.asarray(img.dataobj) == old, new, label).astype(np.uint8)
    nib.save(nib.Nifti1Image(label, img.affine if affine is None else affine), path)
    return str(path)


FLIPPED = BRATS_AFFINE @ np.diag([-1.0, 1, 1, 1])  # x axis mirrored: same shape, wrong side of the head
SHIFTED = BRATS_AFFINE.copy()
SHIFTED[:3, 3] += [0, 5.0, 0]  # 5 mm anterior


@pytest.mark.parametrize("affine, what", [(FLIPPED, "direction"), (SHIFTED, "origin"),
                                          (BRATS_AFFINE @ np.diag([2.0, 2, 2, 1]), "spacing")],
                         ids=["flipped", "shifted", "spacing"])
def test_label_off_the_image_grid_is_named(affine, what):
    with pytest.raises(MedsegError, match=rf"^seg.nii.gz: label {what} .* differs from the image's .*\(t1.nii.gz\)"):
        check_label_grid("seg.nii.gz", (4, 4, 4), affine, "t1.nii.gz", (4, 4, 4), BRATS_AFFINE)


def test_header_rounding_is_tolerated_but_a_real_shift_is_not():
    noisy = BRATS_AFFINE + 1e-6
    assert check_label_grid("seg.nii.gz", (4, 4, 4), noisy.astype(np.float32), "t1.nii.gz", (4, 4, 4),
                            BRATS_AFFINE) is None
    shifted = BRATS_AFFINE.copy()
    shifted[:3, 3] += 0.5  # half a voxel
    with pytest.raises(MedsegError, match="label origin"):
        check_label_grid("seg.nii.gz", (4, 4, 4), shifted, "t1.nii.gz", (4, 4, 4), BRATS_AFFINE)


def test_header_geometry_matches_the_full_read(tmp_path):
    """setup compares labels from their headers only; the header must give what the loader will see."""
    img = sitk.GetImageFromArray(np.zeros((5, 6, 7), np.float32))  # (Z, Y, X)
    img.SetSpacing((0.5, 0.7, 2.0))
    img.SetOrigin((1.0, 2.0, 3.0))
    img.SetDirection((0, 1, 0, -1, 0, 0, 0, 0, 1))  # oblique in-plane
    sitk.WriteImage(img, str(tmp_path / "a.nrrd"))
    nib.save(nib.Nifti1Image(np.zeros((7, 6, 5, 2), np.float32), FLIPPED), tmp_path / "b.nii.gz")  # 4D, channels last
    for name in ("a.nrrd", "b.nii.gz"):
        shape, affine = read_header(tmp_path / name)
        volume = read_volume(tmp_path / name)
        assert shape == volume.array.shape and np.allclose(affine, volume.affine)


def test_flipped_label_stops_setup_before_any_case_is_loaded(tmp_path):
    """Without a cache nothing is read in setup, so only the header check can stop a misaligned set up front."""
    for i in range(3):
        write_case(tmp_path, f"case{i}", seed=i)
    bad = relabel(tmp_path / "case1", affine=FLIPPED)
    dm = SegDataModule(root=str(tmp_path), modalities=["flair", "t1ce"], cache="none")
    with pytest.raises(MedsegError, match=rf"^{bad}: label direction"):
        dm.setup("fit")




@pytest.mark.parametrize("convention", ["brats2013", "brats2021"])
def test_brats2023_labels_under_an_older_convention_are_refused(tmp_path, convention):
    for i in range(3):
        write_case(tmp_path, f"case{i}", seed=i)
        relabel(tmp_path / f"case{i}", mapping={4: 3})  # BraTS 2023: enhancing tumour is 3
    dm = SegDataModule(root=str(tmp_path), modalities=["flair", "t1ce"], label_convention=convention, cache="none")
    with pytest.raises(MedsegError, match=r"3 but never 4.*--data.label_convention=brats2023"):
        dm.setup("fit")
    dm = SegDataModule(root=str(tmp_path), modalities=["flair", "t1ce"], label_convention="brats2023", cache="none")
    dm.setup("fit")
    assert len(dm.train_ds) + len(dm.val_ds) == 3 and len(dm.val_ds) == 1  # val_cases=1


def test_brats2013_set_with_label_3_and_4_passes(tmp_path):
    for i in range(3):
        write_case(tmp_path, f"case{i}", seed=i)
    relabel(tmp_path / "case0", mapping={1: 3})  # non-enhancing tumour (3) next to enhancing (4): BraTS 2013
    dm = SegDataModule(root=str(tmp_path), modalities=["flair", "t1ce"], label_convention="brats2013", cache="none")
    dm.setup("fit")
    assert len(dm.train_ds) + len(dm.val_ds) == 3  # the case with labels 3 and 4 is kept, not refused
