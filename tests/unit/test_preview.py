"""Preview PNG (three panels on a mm scale, radiological left-right, overlay where the lesion is) and region stats."""

import json

import numpy as np
import pytest
from PIL import Image

from medseg.inference.preview import write_preview, write_stats

SHAPE = (40, 30, 20)
ZOOMS = (1.0, 1.0, 2.0)


def volume_with_lesion() -> tuple[np.ndarray, np.ndarray]:
    """A noisy image and a BraTS 2021 lesion at high x (the patient's right in RAS voxel order)."""
    image = np.random.default_rng(0).normal(100, 10, SHAPE).astype(np.float32)
    label = np.zeros(SHAPE, np.uint8)
    label[28:36, 10:20, 8:12] = 2
    label[30:34, 12:18, 9:11] = 4
    return image, label


def green(png) -> np.ndarray:
    """Pixels where the WT overlay colour (green) dominates: (H, W) bool."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return rgb[..., 1] - np.maximum(rgb[..., 0], rgb[..., 2]) > 40


def test_preview_panels_aspect_and_overlay_position(tmp_path):
    image, label = volume_with_lesion()
    write_preview(np.stack([image, -image], axis=3), label, "brats2021", tmp_path / "ras.png", ZOOMS)
    png = Image.open(tmp_path / "ras.png")
    # extents 40 × 30 × 40 mm on a 256 px scale for the longest: axial 256 × 192, coronal 256 × 256 (z is 2 mm),
    # sagittal 192 × 256, separated by 4 px gaps; a 20 px legend below
    assert png.size == (256 + 4 + 256 + 4 + 192, 256 + 20)
    mask = green(tmp_path / "ras.png")[:256]
    axial, coronal, sagittal = mask[:, :256], mask[:, 260:516], mask[:, 520:]
    assert axial.any() and coronal.any() and sagittal.any()
    assert axial[:, :128].sum() > 0 == axial[:, 128:].sum()  # radiological: the patient's right on the left
    # the same voxels with x flipped by the affine lie on the patient's left: drawn on the right
    write_preview(image, label, "brats2021", tmp_path / "las.png", ZOOMS, affine=np.diag([-1.0, 1.0, 2.0, 1.0]))
    flipped = green(tmp_path / "las.png")[:256, :256]
    assert flipped[:, 128:].sum() > 0 == flipped[:, :128].sum()


def test_preview_of_an_empty_mask_has_no_overlay(tmp_path):
    image, label = volume_with_lesion()
    write_preview(image, np.zeros_like(label), "brats2021", tmp_path / "empty.png", ZOOMS)
    assert not green(tmp_path / "empty.png")[:256].any()
    assert [p.name for p in tmp_path.iterdir()] == ["empty.png"]  # written through a temporary file, renamed


def test_stats_volumes_for_anisotropic_voxels(tmp_path):
    _, label = volume_with_lesion()
    write_stats(label, "brats2021", (0.5, 1.0, 3.0), tmp_path / "stats.json")
    stats = json.loads((tmp_path / "stats.json").read_text())
    wt, et = 8 * 10 * 4, 4 * 6 * 2
    assert stats["wt"] == {"voxels": wt, "volume_ml": pytest.approx(wt * 1.5 / 1000)}
    assert stats["tc"]["voxels"] == stats["et"]["voxels"] == et  # nested: enhancing tumour is also core
    assert stats["et"]["volume_ml"] == pytest.approx(et * 1.5 / 1000)
    write_stats(np.where(label > 0, 0, 255).astype(np.uint8), "em_membrane", (1.0, 1.0, 1.0), tmp_path / "em.json")
    assert json.loads((tmp_path / "em.json").read_text())["membrane"]["voxels"] == wt  # 0 = membrane
