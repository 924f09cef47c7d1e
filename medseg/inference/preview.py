"""A PNG to check a mask at a glance, and a JSON of each region's size (TotalSegmentator's --preview/--statistics).

The preview shows axial, coronal and sagittal slices through the largest connected lesion (the volume's centre
when the mask is empty, and always for EM), on a common mm scale so anisotropic voxels keep their true aspect.
With an affine the volume is first turned to RAS and drawn in the radiological convention: the patient's right
on the image's left, anterior up (axial), superior up (coronal, sagittal), anterior on the left (sagittal).
"""

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from medseg.evaluation.metrics import prediction_regions
from medseg.labels import get_convention
from medseg.utils.files import atomic_write, write_json

REGION_COLOURS = [(0, 200, 0), (230, 30, 30), (255, 220, 0), (40, 120, 255), (255, 0, 255), (0, 220, 220)]
ALPHA = 0.45  # overlay opacity: the scan stays readable under the mask
PANEL_PX = 256  # the longest side of the volume, in pixels
LEGEND_PX = 20


def region_stats(label: np.ndarray, convention: str, zooms: Sequence[float]) -> dict[str, dict[str, float]]:
    """Voxel count and volume (mL, zooms in mm) of each region of a (X, Y, Z) label map written by medseg."""
    ml_per_voxel = float(np.prod(zooms[:3])) / 1000.0
    masks = prediction_regions(label, get_convention(convention))
    return {r: {"voxels": int(m.sum()), "volume_ml": int(m.sum()) * ml_per_voxel} for r, m in masks.items()}


def write_stats(label: np.ndarray, convention: str, zooms: Sequence[float], out: str | Path) -> None:
    """`--stats OUT.json`: region_stats written atomically."""
    write_json(out, region_stats(label, convention, zooms))


def write_preview(image: np.ndarray, label: np.ndarray, convention: str, out_png: str | Path,
                  zooms: Sequence[float], affine: np.ndarray | None = None) -> None:
    """Three orthogonal slices of a (X, Y, Z[, C]) image (C: its first channel is shown) with the (X, Y, Z) label
    map overlaid in per-region colours, as PNG.

    affine: the voxel-to-world matrix of image and label; without it the arrays are taken as already RAS.
    """
    if image.shape[:3] != label.shape:
        raise ValueError(f"image shape {image.shape} and label shape {label.shape} differ")
    image = image[..., 0] if image.ndim == 4 else image
    conv = get_convention(convention)
    zooms = np.asarray(zooms[:3], dtype=float)
    if affine is not None:
        image, label, zooms = to_ras(image, label, affine)
    masks = prediction_regions(label, conv)
    centre = volume_centre(label.shape) if conv.labels is None else lesion_centre(np.any(list(masks.values()), 0))
    grey = window(image)
    colours = {r: REGION_COLOURS[i % len(REGION_COLOURS)] for i, r in enumerate(conv.regions)}
    mm_per_px = float(max(np.array(label.shape) * zooms)) / PANEL_PX
    panels = []
    for axis in (2, 1, 0):  # axial (fixed z), coronal (fixed y), sagittal (fixed x)
        rgb = overlay(take(grey, axis, centre), {r: take(m, axis, centre) for r, m in masks.items()}, colours,
                      conv.paint)
        cols, rows = (zooms[a] for a in range(3) if a != axis)
        size = (max(1, round(rgb.shape[1] * cols / mm_per_px)), max(1, round(rgb.shape[0] * rows / mm_per_px)))
        panels.append(Image.fromarray(rgb).resize(size, Image.Resampling.NEAREST))
    canvas = compose(panels, colours)
    atomic_write(Path(out_png), lambda p: canvas.save(p, format="PNG"))


def to_ras(image: np.ndarray, label: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both arrays turned to the closest RAS axis order (nibabel), and their zooms in that order."""
    turned = [nib.as_closest_canonical(nib.Nifti1Image(a, affine)) for a in (image.astype(np.float32), label)]
    return np.asarray(turned[0].dataobj), np.asarray(turned[1].dataobj), np.array(turned[1].header.get_zooms()[:3])


def volume_centre(shape: Sequence[int]) -> tuple[int, int, int]:
    return tuple(s // 2 for s in shape)


def lesion_centre(mask: np.ndarray) -> tuple[int, int, int]:
    """The voxel of the largest connected component nearest its centre of mass; the volume centre if empty."""
    components, n = ndimage.label(mask)
    if n == 0:
        return volume_centre(mask.shape)
    largest = 1 + int(np.argmax(ndimage.sum_labels(mask, components, range(1, n + 1))))
    voxels = np.argwhere(components == largest)  # (N, 3)
    nearest = voxels[np.argmin(((voxels - voxels.mean(0)) ** 2).sum(1))]
    return tuple(int(v) for v in nearest)


def window(image: np.ndarray) -> np.ndarray:
    """uint8 image between the 0.5th and 99.5th percentiles of its non-zero voxels (the skull-stripped brain)."""
    values = image[image != 0] if np.any(image != 0) else image.ravel()
    low, high = np.percentile(values, [0.5, 99.5])
    return (np.clip((image - low) / max(high - low, 1e-6), 0, 1) * 255).astype(np.uint8)


def take(volume: np.ndarray, axis: int, centre: Sequence[int]) -> np.ndarray:
    """The slice through `centre` across `axis`, flipped for display: (A, B) plane -> (rows = B reversed,
    cols = A reversed), which puts RAS's right on the left and anterior/superior at the top."""
    plane = np.take(volume, centre[axis], axis=axis)  # (A, B): the two remaining axes in order
    return plane[::-1, ::-1].T


def overlay(grey: np.ndarray, masks: dict[str, np.ndarray], colours: dict[str, tuple[int, int, int]],
            paint: Sequence[tuple[str, int]]) -> np.ndarray:
    """(H, W) grey + region masks -> (H, W, 3) uint8, regions blended in the convention's painting order."""
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    for region, _ in paint:
        m = masks[region]
        rgb[m] = (1 - ALPHA) * rgb[m] + ALPHA * np.array(colours[region], dtype=np.float32)
    return rgb.round().astype(np.uint8)


def compose(panels: list[Image.Image], colours: dict[str, tuple[int, int, int]]) -> Image.Image:
    """Panels side by side on black, bottom-aligned, with a legend strip of region colours below."""
    gap = 4
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    height = max(p.height for p in panels)
    canvas = Image.new("RGB", (width, height + LEGEND_PX), "black")
    x = 0
    for p in panels:
        canvas.paste(p, (x, height - p.height))
        x += p.width + gap
    draw = ImageDraw.Draw(canvas)
    x = 4
    for region, colour in colours.items():
        draw.rectangle((x, height + 5, x + 10, height + 15), fill=colour)
        draw.text((x + 14, height + 4), region, fill="white")
        x += 20 + 7 * len(region) + 8
    return canvas


def write_instance_preview(image: np.ndarray, boundary: np.ndarray, ids: np.ndarray, out_png: str | Path) -> None:
    """EM neuron ids at a glance: the middle section (fixed z) of the raw image, the predicted boundary map and
    the ids in random colours over the image, side by side, each as a TIFF viewer shows the section (rows y)."""
    z = ids.shape[2] // 2
    section = lambda volume: np.ascontiguousarray(volume[:, :, z].T)  # noqa: E731  (X, Y) -> rows y, columns x
    raw = section(window(image))
    palette = np.random.default_rng(0).integers(40, 256, size=(int(ids.max()) + 1, 3)).astype(np.float32)
    coloured = (1 - ALPHA) * np.repeat(raw[..., None], 3, 2) + ALPHA * palette[section(ids)]
    panels = [np.repeat(raw[..., None], 3, 2), np.repeat(section(window(boundary))[..., None], 3, 2),
              coloured.round().astype(np.uint8)]
    scale = max(1, PANEL_PX // max(raw.shape))
    canvas = compose([Image.fromarray(p).resize((p.shape[1] * scale, p.shape[0] * scale), Image.Resampling.NEAREST)
                      for p in panels], {})
    atomic_write(Path(out_png), lambda p: canvas.save(p, format="PNG"))


def instance_stats(ids: np.ndarray) -> dict[str, float]:
    """How many neuron ids a prediction holds and how large they are (voxels)."""
    sizes = np.bincount(ids.ravel())[1:]
    sizes = sizes[sizes > 0]
    return {"neurons": int(sizes.size), "voxels_median": float(np.median(sizes)) if sizes.size else 0.0,
            "voxels_max": int(sizes.max(initial=0))}
