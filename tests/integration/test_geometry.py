"""Predicted masks keep the input's exact voxel grid and header (NIfTI sform/qform and codes, ITK geometry).

Every prediction goes through the real `medseg predict` entry point (`medseg.cli.main`). Geometry checks use the
native-grid oracle checkpoint (tests/oracle.py: hand-set weights, the mask is the synthetic lesion), so a wrong voxel
order also shows as a lost Dice; the resampled (2 mm) inverse is in test_oracle_geometry.py. File-handling checks use
the tiny session checkpoint from conftest (2 channels [flair, t1ce], brats2021 regions, native grid, foreground crop).
"""

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

from medseg.cli import main
from medseg.data.io import itk_affine
from tests.conftest import BRATS_AFFINE, synthetic_case, write_case

BRATS_VALUES = {0, 1, 2, 4}


# ----------------------------------------------------------------------------------------------------- helpers


def rotation_z(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])


def affine_from(linear: np.ndarray, translation) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = translation
    return affine


RAS = affine_from(np.eye(3), (-16.0, -18.0, -14.0))
OBLIQUE = affine_from(rotation_z(17.0), (12.5, -30.25, 8.0))
ANISOTROPIC = affine_from(np.diag([0.9, 1.1, 3.0]), (-14.4, -19.8, -42.0))
QFORM = affine_from(np.diag([-1.0, -1.0, 1.0]), (90.0, 126.0, -72.0))
SFORM_SHIFTED = QFORM + np.array([[0, 0, 0, 5.0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])  # +5 mm in x


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray, *, qform: np.ndarray | None = None,
               qcode: int = 1, scode: int = 1, units: tuple[str, str] = ("mm", "sec")) -> Path:
    """A NIfTI with explicitly coded xforms (qform defaults to the sform matrix), built from a header."""
    header = nib.Nifti1Header()
    header.set_data_dtype(array.dtype)
    header.set_data_shape(array.shape)
    header.set_qform(affine if qform is None else qform, code=qcode)
    header.set_sform(affine, code=scode)
    header.set_xyzt_units(*units)
    nib.save(nib.Nifti1Image(array, None, header), path)
    return path


def predict(inputs, model: Path, output: Path | None, *extra: str) -> int:
    argv = ["predict", *map(str, inputs), "--model", str(model), "--device", "cpu", *extra]
    if output is not None:
        argv += ["--output", str(output)]
    return main(argv)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def mask_array(img) -> np.ndarray:
    assert img.get_data_dtype() == np.uint8
    data = np.asanyarray(img.dataobj)
    assert data.dtype == np.uint8
    return data


def assert_brats_mask(values: np.ndarray) -> None:
    found = set(np.unique(values).tolist())
    assert found <= BRATS_VALUES, f"label values {sorted(found)} outside {sorted(BRATS_VALUES)}"
    assert len(found) >= 2, f"mask is constant ({sorted(found)}): nothing to check the geometry with"


def assert_xform(out_header, in_header, which: str) -> None:
    (m_out, c_out), (m_in, c_in) = (getattr(h, f"get_{which}")(coded=True) for h in (out_header, in_header))
    assert int(c_out) == int(c_in), f"{which} code {c_out} != input's {c_in}"
    if m_in is None:
        assert m_out is None
    else:
        np.testing.assert_allclose(m_out, m_in, rtol=0, atol=1e-6, err_msg=which)


def assert_same_nifti_header(reference: Path, output: Path) -> np.ndarray:
    """Output NIfTI on the reference's grid with its header; returns the mask array."""
    ref, out = nib.load(reference), nib.load(output)
    assert out.ndim == 3
    assert out.shape == ref.shape[:3]
    assert_xform(out.header, ref.header, "sform")
    assert_xform(out.header, ref.header, "qform")
    assert out.header.get_zooms() == ref.header.get_zooms()[:3]
    assert out.header.get_xyzt_units() == ref.header.get_xyzt_units()
    mask = mask_array(out)
    assert_brats_mask(mask)
    return mask


def assert_same_itk_geometry(reference: Path, output: Path) -> None:
    ref, out = sitk.ReadImage(str(reference)), sitk.ReadImage(str(output))
    assert out.GetSize() == ref.GetSize()
    np.testing.assert_allclose(out.GetOrigin(), ref.GetOrigin(), rtol=0, atol=1e-5, err_msg="origin")
    np.testing.assert_allclose(out.GetSpacing(), ref.GetSpacing(), rtol=0, atol=1e-5, err_msg="spacing")
    np.testing.assert_allclose(out.GetDirection(), ref.GetDirection(), rtol=0, atol=1e-5, err_msg="direction")


def dice_nonzero(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum())


# ----------------------------------------------------------------------------------------------------- NIfTI


def test_voxel_order_does_not_change_the_mask(tmp_path, oracle):
    """The same scan stored transposed and flipped (same world coordinates) gets the same mask, voxel for voxel."""
    channels, lesion = synthetic_case(10)  # lesion off-centre on every axis: a flip would move it
    shape = channels["flair"].shape
    ornt = np.array([[1, -1], [0, 1], [2, -1]])  # array axis 0 -> 1 (flipped), 1 -> 0, 2 -> 2 (flipped)
    swapped_affine = BRATS_AFFINE @ inv_ornt_aff(ornt, shape)
    for name, affine, reorient in [("plain", BRATS_AFFINE, False), ("swapped", swapped_affine, True)]:
        folder = tmp_path / name
        folder.mkdir()
        for modality, array in channels.items():
            data = apply_orientation(array, ornt).astype(np.float32) if reorient else array
            save_nifti(folder / f"{name}_{modality}.nii.gz", np.ascontiguousarray(data), affine)

    swapped_flair = nib.load(tmp_path / "swapped" / "swapped_flair.nii.gz")
    assert swapped_flair.shape != shape  # the second file really has another voxel order
    back = ornt_transform(io_orientation(swapped_affine), io_orientation(BRATS_AFFINE))
    # helper sanity: every voxel sits at the same world position in both files, and mapping back is exact
    index = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), -1).astype(float)  # (X, Y, Z, 3)
    index_swapped = np.stack(np.meshgrid(*map(np.arange, swapped_flair.shape), indexing="ij"), -1).astype(float)
    world_plain = nib.affines.apply_affine(BRATS_AFFINE, index)
    world_swapped = apply_orientation(nib.affines.apply_affine(swapped_affine, index_swapped), back)
    np.testing.assert_allclose(world_swapped, world_plain, atol=1e-6)
    np.testing.assert_array_equal(apply_orientation(np.asanyarray(swapped_flair.dataobj), back), channels["flair"])

    masks = {}
    for name in ("plain", "swapped"):
        out = tmp_path / f"{name}_mask.nii.gz"
        assert predict([tmp_path / name], oracle["native"], out) == 0
        masks[name] = assert_same_nifti_header(tmp_path / name / f"{name}_flair.nii.gz", out)
    assert masks["swapped"].shape == swapped_flair.shape
    swapped_back = apply_orientation(masks["swapped"], back)
    assert swapped_back.shape == masks["plain"].shape
    agreement = (swapped_back == masks["plain"]).mean()
    dice = dice_nonzero(swapped_back, masks["plain"])
    assert agreement >= 0.999 and dice >= 0.95, f"voxel agreement {agreement:.4f}, non-zero Dice {dice:.4f}"
    assert dice_nonzero(masks["plain"], lesion) >= 0.95


def test_4d_channels_last_input(tmp_path, oracle):
    """An MSD-style (X, Y, Z, 2) file with --channels gives a 3D mask with its xforms, the same as two per-channel
    files; without --channels it is refused (its channel order cannot be known)."""
    channels, lesion = synthetic_case(31)
    stacked = np.stack([channels["flair"], channels["t1ce"]], axis=-1)
    four_d = save_nifti(tmp_path / "msd_case.nii.gz", stacked, OBLIQUE)
    assert nib.load(four_d).shape == (*channels["flair"].shape, 2)
    out = tmp_path / "out" / "msd_case_mask.nii.gz"

    assert predict([four_d], oracle["native"], out) == 2 and not out.exists()
    assert predict([four_d], oracle["native"], out, "--channels", "flair,t1ce") == 0
    mask_4d = assert_same_nifti_header(four_d, out)
    assert dice_nonzero(mask_4d, lesion) >= 0.95  # flair really went to the flair input

    split = [save_nifti(tmp_path / f"split_{m}.nii.gz", channels[m], OBLIQUE) for m in ("t1ce", "flair")]
    out_split = tmp_path / "out" / "split_mask.nii.gz"
    assert predict(split, oracle["native"], out_split) == 0
    np.testing.assert_array_equal(mask_4d, mask_array(nib.load(out_split)))


# ----------------------------------------------------------------------------------------------------- ITK


ITK_DIRECTION = rotation_z(25.0) @ np.diag([1.0, -1.0, -1.0])  # oblique, orthonormal, not axis-aligned
ITK_SPACING = (0.9, 1.1, 2.0)
ITK_ORIGIN = (-20.5, 14.25, 33.0)


def write_itk_channels(folder: Path, seed: int = 41, ext: str = ".nrrd") -> list[Path]:
    channels, _ = synthetic_case(seed)
    paths = []
    for modality in ("flair", "t1ce"):
        img = sitk.GetImageFromArray(np.ascontiguousarray(channels[modality].transpose(2, 1, 0)))  # (X,Y,Z) size
        img.SetSpacing(ITK_SPACING)
        img.SetOrigin(ITK_ORIGIN)
        img.SetDirection(ITK_DIRECTION.flatten().tolist())
        path = folder / f"itkcase_{modality}{ext}"
        sitk.WriteImage(img, str(path), True)
        paths.append(path)
    return paths


def test_nrrd_input_to_nrrd_output_keeps_itk_geometry(tmp_path, oracle):
    inputs = write_itk_channels(tmp_path)
    ref = sitk.ReadImage(str(inputs[0]))
    np.testing.assert_allclose(ref.GetDirection(), ITK_DIRECTION.flatten(), atol=1e-9)  # the writer kept it
    out = tmp_path / "out" / "itkcase_mask.nrrd"

    assert predict(inputs, oracle["native"], out) == 0

    mask = sitk.ReadImage(str(out))
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert mask.GetDimension() == 3
    assert_same_itk_geometry(inputs[0], out)
    assert_brats_mask(sitk.GetArrayFromImage(mask))
    lesion = synthetic_case(41)[1]
    assert dice_nonzero(sitk.GetArrayFromImage(mask).transpose(2, 1, 0), lesion) >= 0.95  # (Z, Y, X) -> (X, Y, Z)


def test_nrrd_input_to_nifti_output_uses_itk_affine(tmp_path, oracle):
    inputs = write_itk_channels(tmp_path)
    ref = sitk.ReadImage(str(inputs[0]))
    out = tmp_path / "out" / "itkcase_mask.nii.gz"

    assert predict(inputs, oracle["native"], out) == 0

    img = nib.load(out)
    assert img.shape == ref.GetSize()
    np.testing.assert_allclose(img.affine, itk_affine(ref), rtol=0, atol=1e-5)
    for which in ("sform", "qform"):
        matrix, code = getattr(img.header, f"get_{which}")(coded=True)
        assert code > 0, f"{which} code is 0"
        np.testing.assert_allclose(matrix, itk_affine(ref), rtol=0, atol=1e-5, err_msg=which)
    assert_brats_mask(mask_array(img))
    assert dice_nonzero(mask_array(img), synthetic_case(41)[1]) >= 0.95
    assert_same_itk_geometry(inputs[0], out)  # read back by ITK, the NIfTI sits where the NRRD does


# ----------------------------------------------------------------------------------------------------- files


@pytest.mark.parametrize("form", ["case-folder", "channel-files"])
def test_inputs_are_not_modified(tmp_path, tiny_ckpt, form):
    case = write_case(tmp_path / "data", "case", seed=51)  # with its _seg file, which predict must not touch
    before = tree_digests(tmp_path / "data")
    inputs = [case] if form == "case-folder" else [case / "case_flair.nii.gz", case / "case_t1ce.nii.gz"]
    out = tmp_path / "out" / "mask.nii.gz"

    assert predict(inputs, tiny_ckpt, out) == 0

    assert out.is_file()
    assert tree_digests(tmp_path / "data") == before  # same files, same bytes, nothing added beside them


@pytest.mark.parametrize("spelling", ["same-path", "same-path-overwrite", "dotdot-spelling"])
def test_output_equal_to_an_input_is_refused(tmp_path, tiny_ckpt, capsys, spelling):
    case = write_case(tmp_path, "case", seed=61, with_label=False)
    inputs = [case / "case_flair.nii.gz", case / "case_t1ce.nii.gz"]
    before = tree_digests(case)
    target = inputs[0] if spelling != "dotdot-spelling" else case / ".." / "case" / "case_flair.nii.gz"
    extra = ["--overwrite"] if spelling == "same-path-overwrite" else []

    assert predict(inputs, tiny_ckpt, target, *extra) == 2

    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("error: ")], err
    assert tree_digests(case) == before


def test_existing_output_needs_overwrite(tmp_path, tiny_ckpt, capsys):
    case = write_case(tmp_path, "case", seed=71, with_label=False)
    out = tmp_path / "mask.nii.gz"
    out.write_bytes(b"an earlier result the user wants to keep")

    assert predict([case], tiny_ckpt, out) == 2
    err = capsys.readouterr().err
    assert any(line.startswith("error: ") and str(out) in line for line in err.splitlines()), err
    assert out.read_bytes() == b"an earlier result the user wants to keep"

    assert predict([case], tiny_ckpt, out, "--overwrite") == 0
    assert_same_nifti_header(case / "case_flair.nii.gz", out)
    assert not list(tmp_path.glob(".tmp-*"))


@pytest.mark.parametrize("form", ["case-folder", "channel-files"])
def test_default_output_name_in_cwd(tmp_path, tiny_ckpt, monkeypatch, form):
    case = write_case(tmp_path / "data", "BraTS2021_00042", seed=81, with_label=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    inputs = [case] if form == "case-folder" else [case / f"{case.name}_{m}.nii.gz" for m in ("flair", "t1ce")]

    assert predict(inputs, tiny_ckpt, None) == 0

    assert sorted(p.name for p in cwd.iterdir()) == ["BraTS2021_00042_pred.nii.gz"]
    assert_same_nifti_header(case / "BraTS2021_00042_flair.nii.gz", cwd / "BraTS2021_00042_pred.nii.gz")
    assert sorted(p.name for p in case.iterdir()) == ["BraTS2021_00042_flair.nii.gz", "BraTS2021_00042_t1ce.nii.gz"]
