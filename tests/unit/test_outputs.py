"""Output safety: files get the user's umask, detached formats name their real data file, failures leave nothing."""

import json
import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.data.io import itk_affine, read_volume, write_mask
from medseg.utils.files import atomic_write

SHAPE = (6, 7, 5)  # (X, Y, Z)


@pytest.fixture
def umask(request):
    """Run the test under the umask given by parametrize, then restore the previous one."""
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def mask_array() -> np.ndarray:
    return (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 3 == 0).astype(np.uint8)


def itk_reference(path: Path) -> Path:
    """An oblique, anisotropic, shifted ITK image: geometry a wrong header would lose."""
    img = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=SHAPE[::-1]).astype(np.float32))
    img.SetSpacing((0.9, 1.2, 3.0))
    img.SetOrigin((10.5, -20.0, 7.25))
    c, s = np.cos(0.3), np.sin(0.3)
    img.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(img, str(path))
    return path


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077], indirect=True, ids=oct)
def test_masks_and_json_follow_the_umask(tmp_path, umask):
    """0644 under umask 022 (0664 under 002, 0600 under 077): readable by the lab group and other Docker users."""
    expected = 0o666 & ~umask
    image = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.float32), np.diag([1.0, 1.0, 2.0, 1.0])), image)
    write_mask(mask_array(), read_volume(image), tmp_path / "out" / "mask.nii.gz")
    report = tmp_path / "out" / "report.json"
    atomic_write(report, lambda p: p.write_text(json.dumps({"dice": 0.9})))

    assert mode(tmp_path / "out" / "mask.nii.gz") == expected
    assert mode(report) == expected
    assert json.loads(report.read_text()) == {"dice": 0.9}
    assert np.array_equal(np.asarray(nib.load(tmp_path / "out" / "mask.nii.gz").dataobj), mask_array())


@pytest.mark.parametrize("umask", [0o022], indirect=True, ids=oct)
@pytest.mark.parametrize(("ext", "data_ext"), [(".mhd", ".zraw"), (".nhdr", ".raw.gz")])
def test_detached_formats_point_at_their_data_file(tmp_path, umask, ext, data_ext):
    """Header and data file both land under the output's name, the header names that data file, and SimpleITK and
    medseg read back the mask on the reference's exact geometry; writing again replaces both."""
    reference = read_volume(itk_reference(tmp_path / f"scan{ext}"))
    out_dir = tmp_path / "out"
    out = out_dir / f"mask{ext}"
    for _ in range(2):  # the second write overwrites both files in place
        write_mask(mask_array(), reference, out)

    assert sorted(p.name for p in out_dir.iterdir()) == sorted([f"mask{ext}", f"mask{data_ext}"])
    header = out.read_bytes().split(b"\n\n")[0] if ext == ".nhdr" else out.read_bytes()
    assert f"mask{data_ext}".encode() in header and b".tmp-" not in header
    assert {mode(p) for p in out_dir.iterdir()} == {0o644}

    back = sitk.ReadImage(str(out))
    assert np.array_equal(sitk.GetArrayFromImage(back).transpose(2, 1, 0), mask_array())  # (Z, Y, X) -> (X, Y, Z)
    assert np.allclose(itk_affine(back), reference.affine)
    again = read_volume(out)
    assert np.array_equal(again.array, mask_array()) and np.allclose(again.affine, reference.affine)


def test_a_failed_write_keeps_the_old_output_and_leaves_no_temporary_files(tmp_path):
    out = tmp_path / "report.json"
    out.write_text("old")

    def fail(p: Path) -> None:
        p.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(out, fail)
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
