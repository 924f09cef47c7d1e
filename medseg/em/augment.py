"""EM augmentation (PyTorch Connectomics' set): MONAI transforms where they exist, three section artefacts here.

Serial-section and FIB-SEM stacks have artefacts that natural-image augmentation lacks: a section missing or
partly missing (lost or dirty section, charging), sections shifted against the ones before them (misalignment), and
sections smeared along one direction (motion blur). Sections are the last axis (z) of (C, X, Y, Z) patches.
Missing and blurred sections change the image only (the neurons are still there); misalignment moves image and
label together from a random section on, as a misaligned stack shows real neurons displaced.
"""

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai import transforms as T
from scipy import ndimage


class RandMissingSectiond(T.RandomizableTransform, T.MapTransform):
    """Up to `max_sections` z sections of `image` set to the patch mean, each wholly or (half the time) in a random
    rectangle only."""

    def __init__(self, keys: Sequence[str] = ("image",), prob: float = 0.1, max_sections: int = 2):
        T.RandomizableTransform.__init__(self, prob)
        T.MapTransform.__init__(self, keys)
        self.max_sections = max_sections

    def __call__(self, data: dict) -> dict:
        self.randomize(None)
        if not self._do_transform:
            return dict(data)
        d = dict(data)
        image = d["image"].clone()
        _, nx, ny, nz = image.shape
        fill = image.mean()
        for z in self.R.choice(nz, size=min(nz, self.R.randint(1, self.max_sections + 1)), replace=False):
            if self.R.rand() < 0.5:
                image[..., z] = fill
            else:
                x0, y0 = self.R.randint(0, nx // 2), self.R.randint(0, ny // 2)
                x1, y1 = self.R.randint(x0 + nx // 4, nx + 1), self.R.randint(y0 + ny // 4, ny + 1)
                image[:, x0:x1, y0:y1, z] = fill
        d["image"] = image
        return d


class RandMisalignd(T.RandomizableTransform, T.MapTransform):
    """Image and label from a random z section on shifted in x and y by up to `max_shift` voxels (a misaligned
    stack), or (half the time) one section only shifted; voxels shifted in from outside repeat the edge."""

    def __init__(self, keys: Sequence[str] = ("image", "label"), prob: float = 0.1, max_shift: int = 4):
        T.RandomizableTransform.__init__(self, prob)
        T.MapTransform.__init__(self, keys)
        self.max_shift = max_shift

    def __call__(self, data: dict) -> dict:
        self.randomize(None)
        if not self._do_transform:
            return dict(data)
        d = dict(data)
        nz = d["image"].shape[-1]
        z0 = self.R.randint(1, nz)
        z1 = z0 + 1 if self.R.rand() < 0.5 else nz
        dx, dy = self.R.randint(-self.max_shift, self.max_shift + 1, size=2)
        for key in self.key_iterator(d):
            x = d[key].clone()
            x[..., z0:z1] = shift_edge(x[..., z0:z1], int(dx), int(dy))
            d[key] = x
        return d


def shift_edge(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """(C, X, Y, Z) moved by (dx, dy) voxels in x and y, the edge voxels repeated into the uncovered border."""
    nx, ny = x.shape[1], x.shape[2]
    ix = (torch.arange(nx) - dx).clamp(0, nx - 1)
    iy = (torch.arange(ny) - dy).clamp(0, ny - 1)
    return x[:, ix][:, :, iy]


class RandMotionBlurd(T.RandomizableTransform, T.MapTransform):
    """Up to `max_sections` z sections of `image` blurred along one random in-plane direction (a line kernel of
    `length` voxels), as stage motion during a section's scan does."""

    def __init__(self, keys: Sequence[str] = ("image",), prob: float = 0.1, max_sections: int = 2, length: int = 7):
        T.RandomizableTransform.__init__(self, prob)
        T.MapTransform.__init__(self, keys)
        self.max_sections, self.length = max_sections, length

    def __call__(self, data: dict) -> dict:
        self.randomize(None)
        if not self._do_transform:
            return dict(data)
        d = dict(data)
        image = d["image"]
        array = np.asarray(image.detach().cpu()).copy()
        kernel = line_kernel(self.length, self.R.uniform(0, math.pi))
        nz = array.shape[-1]
        for z in self.R.choice(nz, size=min(nz, self.R.randint(1, self.max_sections + 1)), replace=False):
            for c in range(array.shape[0]):
                array[c, :, :, z] = ndimage.convolve(array[c, :, :, z], kernel, mode="reflect")
        out = image.clone()
        out[:] = torch.from_numpy(array)
        d["image"] = out
        return d


def line_kernel(length: int, angle: float) -> np.ndarray:
    """A normalised (length, length) kernel: a line through the centre at `angle` (radians, in the x-y plane)."""
    kernel = np.zeros((length, length), np.float32)
    c = (length - 1) / 2
    for t in np.linspace(-c, c, 4 * length):
        kernel[round(c + t * math.cos(angle)), round(c + t * math.sin(angle))] = 1
    return kernel / kernel.sum()


def em_augmentation(isotropic: bool = True) -> list:
    """Training-patch augmentation for EM neuron models, after patch sampling and before the targets are made.

    Spatial: all 48 flips and axis permutations of an isotropic cube (in-plane only otherwise), elastic deformation,
    voxel-size rescaling by +-20 %; section artefacts (missing, partially missing, misaligned, motion-blurred);
    intensity: contrast around the mean (an other microscope's grey-value spread), brightness, gamma, histogram
    shift, Gaussian noise and blur. Probabilities are moderate so that most patches stay close to real data.
    """
    keys = ["image", "label"]
    planes = [(0, 1), (0, 2), (1, 2)] if isotropic else [(0, 1)]
    spatial = [T.RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(3)]
    spatial += [T.RandRotate90d(keys, prob=0.5, max_k=3, spatial_axes=p) for p in planes]
    spatial += [
        T.RandZoomd(keys, prob=0.3, min_zoom=0.8, max_zoom=1.2, mode=["trilinear", "nearest"], keep_size=True,
                    padding_mode="edge"),
        T.Rand3DElasticd(keys, sigma_range=(6, 8), magnitude_range=(40, 80), prob=0.15,
                         mode=["bilinear", "nearest"], padding_mode="border"),
    ]
    sections = [RandMissingSectiond(prob=0.15), RandMisalignd(prob=0.15), RandMotionBlurd(prob=0.1)]
    intensity = [
        T.RandScaleIntensityFixedMeand("image", prob=0.3, factors=0.4),  # contrast x (0.6, 1.4) around the mean
        T.RandShiftIntensityd("image", prob=0.3, offsets=0.3),  # brightness (z-scored units)
        T.RandAdjustContrastd("image", prob=0.3, gamma=(0.7, 1.5)),  # gamma on the patch's min-max range
        T.RandHistogramShiftd("image", prob=0.1, num_control_points=(5, 10)),
        T.RandGaussianNoised("image", prob=0.15, std=0.1),
        T.RandGaussianSmoothd("image", prob=0.15, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)),
    ]
    return spatial + sections + intensity
