"""Geometry with an oracle: a checkpoint whose weights are set by hand (tests/oracle.py), so that its mask is the
synthetic lesion and any geometry error shows up as a lost Dice, not as a differently guessing trained model.

Every prediction goes through `medseg predict` (medseg.cli.main) on LPS, RAS, oblique, axis-permuting,
anisotropic and sform≠qform inputs, with a plan on the native grid and one at 2 mm (resampled there and back), and
must keep the input's exact grid and header with a whole-tumour Dice ≥ 0.95 against the lesion.
"""

from functools import partial

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medseg.data.transforms import preprocess
from medseg.models.loading import build_model, load_checkpoint
from tests.conftest import BRATS_AFFINE, SHAPE, synthetic_case
from tests.integration.test_geometry import (
    ANISOTROPIC,
    OBLIQUE,
    QFORM,
    RAS,
    SFORM_SHIFTED,
    affine_from,
    assert_same_itk_geometry,
    assert_same_nifti_header,
    predict,
    save_nifti,
)
from tests.oracle import (
    FOV_MM,
    GAIN_FLAIR,
    WT_SHARE,
    dice,
    midpoint_z,
    save_plain,
    shape_for,
    window_std,
    write_oracle_case,
)

WT_DICE = 0.95
SEED = 10  # lesion centre (0.23, -0.15, 0.16) of the half-width off-centre: a flip of any axis moves it


def rotation_x(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[1.0, 0.0, 0.0], [0.0, np.cos(t), -np.sin(t)], [0.0, np.sin(t), np.cos(t)]])


PERMUTING = affine_from(rotation_x(70.0) @ np.diag([-1.25, 1.25, 1.25]), (40.0, -20.0, 10.0))  # voxel y -> world S
GEOMETRIES = {  # name -> (affine, writer of the channel files)
    # nibabel's defaults (sform code 2 'aligned', qform code 0), BraTS LPS-like diag(-1, -1, 1)
    "lps-brats-nibabel-codes": (BRATS_AFFINE, save_plain),
    "lps-brats-coded": (BRATS_AFFINE, save_nifti),
    "ras-identity": (RAS, save_nifti),
    "oblique-17deg-z": (OBLIQUE, save_nifti),
    "oblique-70deg-x-permuted": (PERMUTING, save_nifti),
    "anisotropic-0.8x0.8x1.5": (affine_from(np.diag([0.8, 0.8, 1.5]), (-32.0, -32.0, -40.0)), save_nifti),
    "anisotropic-0.9x1.1x3.0": (ANISOTROPIC, partial(save_nifti, units=("mm", "msec"))),
    "sform-qform-disagree": (SFORM_SHIFTED, partial(save_nifti, qform=QFORM, qcode=1, scode=2)),
}


@pytest.mark.parametrize("plan", ["native", "2mm"])
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_mask_keeps_grid_header_and_lesion(tmp_path, oracle, plan, geometry):
    affine, save = GEOMETRIES[geometry]
    shape = SHAPE if plan == "native" else shape_for(affine)
    case, lesion = write_oracle_case(tmp_path, "case", SEED, shape, affine, save)
    reference = case / "case_flair.nii.gz"
    if geometry == "sform-qform-disagree":  # only meaningful if the xforms really differ
        hdr = nib.load(reference).header
        assert not np.allclose(hdr.get_qform(), hdr.get_sform())
        assert (int(hdr["qform_code"]), int(hdr["sform_code"])) == (1, 2)
    out = tmp_path / "out" / "case_mask.nii.gz"

    assert predict([case], oracle[plan], out) == 0

    mask = assert_same_nifti_header(reference, out)
    assert_same_itk_geometry(reference, out)
    assert dice(mask, lesion) >= WT_DICE, f"whole-tumour Dice {dice(mask, lesion):.4f}"


def test_itk_input_keeps_geometry_and_lesion(tmp_path, oracle):
    """NRRD in (ITK's LPS, oblique direction, anisotropic spacing), NRRD out; SimpleITK's (Z, Y, X) arrays."""
    direction = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]) @ rotation_x(20.0)
    spacing = (1.0, 0.8, 1.5)
    shape = tuple(round(FOV_MM / s) for s in spacing)
    channels, lesion = synthetic_case(41, shape)  # off-centre on every axis too
    inputs = []
    for modality in ("flair", "t1ce"):
        img = sitk.GetImageFromArray(np.ascontiguousarray(channels[modality].transpose(2, 1, 0)))  # (Z, Y, X)
        img.SetSpacing(spacing)
        img.SetOrigin((-30.0, 41.5, 12.0))
        img.SetDirection(direction.flatten().tolist())
        inputs.append(tmp_path / f"itkcase_{modality}.nrrd")
        sitk.WriteImage(img, str(inputs[-1]), True)
    out = tmp_path / "out" / "itkcase_mask.nrrd"

    assert predict(inputs, oracle["2mm"], out) == 0

    assert_same_itk_geometry(inputs[0], out)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out))).transpose(2, 1, 0)  # (Z, Y, X) -> (X, Y, Z)
    assert dice(mask, lesion) >= WT_DICE, f"whole-tumour Dice {dice(mask, lesion):.4f}"


def test_oracle_output_is_the_stated_function(oracle):
    """The network computes what tests/oracle.py says (a layer added to UNet3D would silently break the oracle):
    whole-tumour logit = gain · (window-normalised flair − threshold), and the threshold is the lesion's edge."""
    plan, state = load_checkpoint(oracle["2mm"])
    net = build_model(plan, state, "oracle")
    channels, lesion = synthetic_case(3, (24, 24, 24))  # one window that the brain fills as in the 2mm plan
    image = torch.from_numpy(np.stack([channels["flair"], channels["t1ce"]]))  # (2, X, Y, Z)
    x = preprocess(["image"], None, False, True)[-1]({"image": image})["image"]  # z-scored over the brain
    with torch.no_grad():
        logits = net(torch.as_tensor(x)[None])[0]  # (3, X, Y, Z)
    flair = x[0] / x[0].pow(2).mean().sqrt()  # InstanceNorm over the window: mean 0 already
    s = window_std((24, 24, 24), (24, 24, 24))
    expected = GAIN_FLAIR * s * (flair - midpoint_z(WT_SHARE, 150.0) / s)
    np.testing.assert_allclose(logits[0], expected, rtol=0, atol=1e-3)
    torch.testing.assert_close(logits[1], logits[2])  # tc and et: the same t1ce threshold
    assert dice((logits[0] > 0).numpy(), lesion) >= 0.99


def test_dice_bar_catches_a_one_voxel_shift():
    """The 0.95 bar is tight enough: the lesion moved by one 2 mm voxel (or mirrored) no longer passes it."""
    _, lesion = synthetic_case(SEED, shape_for(BRATS_AFFINE))
    for axis in range(3):
        assert dice(np.roll(lesion, 2, axis), lesion) < WT_DICE
        assert dice(np.flip(lesion, axis), lesion) < WT_DICE
