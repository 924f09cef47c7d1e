"""An oracle checkpoint: a real medseg UNet checkpoint whose weights are set by hand, so that its output is a known
function of the input and geometry tests can compare masks with the synthetic lesion instead of a trained guess.

The net is UNet3D(channels [4, 8], strides [1, 2], kernel 3, conv) on [flair, t1ce] with brats2021 regions:
- every 3×3×3 conv of the full-resolution path (encoder stage 0, decoder level 0) is a centre tap that carries
  flair in channel 0 and t1ce in channel 1 (the decoder takes them from the skip, channels 4 and 5 of its input);
- the deep path (stage 1, the upsampling conv) is all zeros, so it adds exactly 0;
- each InstanceNorm has gamma 1 and beta SHIFT, so LeakyReLU sees only positive values and is the identity.
InstanceNorm then maps a channel to x = z / s, z the plan-normalised intensity (mean 0 over the brain, 0 outside)
and s its standard deviation over the window: s = sqrt(b), b the brain's share of the window, when one window
holds the whole brain (keep cases smaller than one patch). The 1×1×1 head gives
    wt = GAIN_FLAIR * s * (x_flair - T_flair),   tc = et = GAIN_T1CE * s * (x_t1ce - T_t1ce)   (= GAIN * (z - z_mid))
with T the raw-intensity midpoints of synthetic_case (flair 100 | 250 lesion, t1ce 100 | 300 enhancing) in these
units. The necrotic core (TC without ET) is not visible locally, so the oracle paints no label 1.
"""

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medseg.data.plan import Plan
from medseg.nets import build_net
from tests.conftest import SHAPE, synthetic_case

NET = {"channels": [4, 8], "strides": [1, 2], "kernel_sizes": [3, 3], "block": "conv", "block_kwargs": {}}
SHIFT = 10.0  # InstanceNorm beta: window-normalised intensities stay above -SHIFT, so LeakyReLU is the identity
BRAIN_RADIUS = math.sqrt(0.6)  # synthetic_case: brain = ellipsoid of normalised radius sqrt(0.6) in its box
# synthetic_case statistics over the brain: lesion (WT) and enhancing shares, raw intensities and noise (std 10)
WT_SHARE = (0.35 / BRAIN_RADIUS) ** 3
ET_SHARE = (0.22**3 - 0.15**3) / BRAIN_RADIUS**3
# logit per unit of z-score: about ±3 at the tissue means, not saturated, so that probabilities interpolated back
# to a finer grid still place the edge between voxels
GAIN_FLAIR, GAIN_T1CE = 1.8, 0.75
FOV_MM = 96.0  # extent of the cases predicted at 2 mm: a 17 mm lesion radius, a 48^3 grid, one 48^3 window
# plan name -> (spacing, patch size, brain box on the network grid) for cases that fill one window
PLANS = {
    "native": (None, (32, 40, 32), SHAPE),  # conftest's cases, predicted on their own grid
    "2mm": ((2.0, 2.0, 2.0), (48, 48, 48), (FOV_MM / 2,) * 3),  # cases of shape_for(affine), resampled
}


def midpoint_z(share: float, contrast: float, noise: float = 10.0) -> float:
    """The z-score (over the brain) of the midpoint between tissue at 100 and a region `share` of the brain at
    100 + contrast: the intensity a mask should cut at."""
    mean = 100 + contrast * share
    std = math.sqrt(contrast**2 * share * (1 - share) + noise**2)
    return (100 + contrast / 2 - mean) / std


def window_std(brain_box: Sequence[float], window: Sequence[float]) -> float:
    """s = sqrt(brain share of the window): the std of a brain-z-scored channel over one window."""
    brain = math.pi / 6 * math.prod(BRAIN_RADIUS * b for b in brain_box)  # ellipsoid in its (box) extent
    return math.sqrt(brain / math.prod(window))


def oracle_state(brain_box: Sequence[float], window: Sequence[float]) -> dict[str, torch.Tensor]:
    """The hand-set weights; brain_box and window in the same units (voxels or mm on the network's grid)."""
    net = build_net("unet", 2, 3, **NET)
    state = {k: torch.zeros_like(v) for k, v in net.state_dict().items()}
    for conv, skip in [("encoder.0.0", 0), ("encoder.0.1", 0), ("decoder.0.0", 4), ("decoder.0.1", 0)]:
        for c in (0, 1):
            state[f"{conv}.0.weight"][c, skip + c, 1, 1, 1] = 1.0  # centre tap: channel c carried through
        state[f"{conv}.1.weight"][:] = 1.0  # InstanceNorm gamma (zero channels stay 0 + beta)
        state[f"{conv}.1.bias"][:] = SHIFT
    s = window_std(brain_box, window)
    t_flair, t_t1ce = midpoint_z(WT_SHARE, 150.0) / s, midpoint_z(ET_SHARE, 200.0) / s
    gain_flair, gain_t1ce = GAIN_FLAIR * s, GAIN_T1CE * s
    head_w, head_b = state["head.weight"], state["head.bias"]
    head_w[0, 0], head_b[0] = gain_flair, -gain_flair * (SHIFT + t_flair)  # wt
    for r in (1, 2):  # tc, et
        head_w[r, 1], head_b[r] = gain_t1ce, -gain_t1ce * (SHIFT + t_t1ce)
    net.load_state_dict(state)  # the shapes fit the real network
    return state


def write_oracle(path: Path, spacing: Sequence[float] | None, patch_size: Sequence[int],
                 brain_box: Sequence[float]) -> Path:
    """A checkpoint file as `medseg train` writes it (plan + `net.` state_dict), for cases whose brain box spans
    `brain_box` voxels on the network's grid (after resampling to `spacing`)."""
    plan = Plan(("flair", "t1ce"), "brats2021", tuple(spacing) if spacing else None, None, True, "nonzero",
                tuple(patch_size)).with_net("unet", NET)
    state = oracle_state(brain_box, patch_size)
    torch.save({"medseg": plan.to_dict(), "state_dict": {f"net.{k}": v for k, v in state.items()}}, path)
    return path


def write_oracles(folder: Path) -> dict[str, Path]:
    """One oracle checkpoint per plan in PLANS, as {plan name: path}."""
    return {name: write_oracle(folder / f"oracle_{name}.ckpt", *plan) for name, plan in PLANS.items()}


def shape_for(affine: np.ndarray) -> tuple[int, ...]:
    """The voxel shape of a FOV_MM case with this affine's voxel sizes (for the 2mm plan)."""
    return tuple(round(FOV_MM / s) for s in np.linalg.norm(affine[:3, :3], axis=0))


def save_plain(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(array, affine), path)


def write_oracle_case(folder: Path, name: str, seed: int, shape: Sequence[int], affine: np.ndarray,
                      save: Callable[[Path, np.ndarray, np.ndarray], object] = save_plain) -> tuple[Path, np.ndarray]:
    """A [flair, t1ce] case folder (no label file) on `shape` voxels with `affine`, written by `save(path, array,
    affine)`; returns the folder and the synthetic label it must be segmented into."""
    channels, label = synthetic_case(seed, tuple(shape))
    case = folder / name
    case.mkdir(parents=True, exist_ok=True)
    for modality, array in channels.items():
        save(case / f"{name}_{modality}.nii.gz", array, affine)
    return case, label


def dice(mask: np.ndarray, target: np.ndarray) -> float:
    mask, target = mask > 0, target > 0
    return 2.0 * np.logical_and(mask, target).sum() / max(1, mask.sum() + target.sum())
