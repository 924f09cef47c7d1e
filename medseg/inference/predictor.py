"""Predictor: a checkpoint loaded once, then region probabilities for any number of cases on their input grid.

Preprocessing is the checkpoint's Plan (the same MONAI chain as training) and is inverted with MONAI's Invertd:
reorientation and cropping are undone exactly, resampling by interpolating region probabilities back to the
original grid before thresholding (nnU-Net's order). Test-time augmentation averages the probabilities of all 8
mirrorings of each window (nnU-Net's default), at 8 times the cost.
"""

import itertools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai import transforms as T
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference

from medseg.data.io import NIFTI, Volume, suffix
from medseg.data.plan import Plan
from medseg.em.decode import DEFAULT_DECODE, DecodeParams, decode
from medseg.errors import MedsegError
from medseg.inference.channels import Channel, match_channels
from medseg.models import resolve_model
from medseg.models.loading import build_model, load_checkpoint
from medseg.runtime import autocast_dtype, pick_device, prepare_net


def mirrored(net: torch.nn.Module, window: torch.Tensor) -> torch.Tensor:
    """Logits of the mean sigmoid probability over the 8 mirrorings of a (B, C, X, Y, Z) window."""
    flips = [axes for n in range(4) for axes in itertools.combinations((2, 3, 4), n)]
    probs = sum(torch.flip(net(torch.flip(window, axes)), axes).float().sigmoid() for axes in flips) / len(flips)
    return torch.logit(probs, eps=1e-6)


def infer(net: torch.nn.Module, image: torch.Tensor, patch: Sequence[int], overlap: float, device: torch.device,
          tta: bool = False) -> torch.Tensor:
    """Float32 logits on the CPU for a (1, C, X, Y, Z) image, by sliding window with Gaussian blending.

    On CUDA the whole volume is first kept on the GPU; when it does not fit, the windows still run on the GPU but
    are stitched into a buffer on the CPU (MONAI's sw_device / device split), which needs one window of GPU memory.
    """
    net = net.to(device)
    window = partial(sliding_window_inference, roi_size=list(patch), sw_batch_size=2,
                     predictor=partial(mirrored, net) if tta else net, overlap=overlap, mode="gaussian",
                     sigma_scale=0.125, progress=True)
    dtype = autocast_dtype(device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        if device.type == "cuda":
            try:
                return window(image.to(device)).float().cpu()
            except torch.cuda.OutOfMemoryError:
                pass  # out of the except block first, so the failed attempt's tensors can be freed
            torch.cuda.empty_cache()
            print("the volume does not fit on the GPU: stitching the windows on the CPU", file=sys.stderr)
        return window(image, sw_device=device, device="cpu").float()


@dataclass
class CasePrediction:
    probabilities: np.ndarray  # (R, X, Y, Z) float32 in [0, 1] on the input's voxel grid
    reference: Volume  # the first channel file: the grid and header every output copies
    image: np.ndarray  # (C, X, Y, Z) the input channels in model order (for previews)
    channels: list[Channel]  # which file (and 4D channel) fed each of the model's modalities


class Predictor:
    """A model loaded once: `predict_case(files)` for as many cases as needed.

    model: a checkpoint path, or the name of a bundled model (`medseg models`).
    channels_last / compile: medseg.runtime.prepare_net (None: the faster memory format for the device).
    decode: how EM boundary/affinity maps become neuron ids (medseg.em.decode); unused by other models.
    keep_largest: keep only the largest foreground component of label maps (None: what the model's plan says).
    """

    def __init__(self, model: str | Path, device: str = "auto", overlap: float = 0.5, tta: bool = False,
                 channels_last: bool | None = None, compile: bool = False, decode: DecodeParams = DEFAULT_DECODE,
                 keep_largest: bool | None = None):
        if not 0 <= overlap < 1:
            raise MedsegError(f"--overlap must be in [0, 1), got {overlap}")
        self.source = resolve_model(model)
        self.plan, state = load_checkpoint(self.source)
        self.keep_largest = self.plan.keep_largest if keep_largest is None else keep_largest
        self.device, self.overlap, self.tta, self.decode = pick_device(device), overlap, tta, decode
        self.net = prepare_net(build_model(self.plan, state, self.source), self.device, channels_last, compile,
                               (2, len(self.plan.modalities), *self.plan.patch_size), autocast_dtype(self.device))
        self.preprocess = T.Compose(self.plan.preprocessing())

    def channels(self, files: Sequence[str], channels: Sequence[str] | None = None) -> list[Channel]:
        """The files' channels in the model's order, identified by name or by `channels` (see inference.channels)."""
        counts = [_channel_count(f) for f in files]
        return match_channels(files, self.plan.modalities, channels, counts)

    def predict_case(self, files: Sequence[str], channels: Sequence[str] | None = None) -> CasePrediction:
        """Region probabilities of one case on the grid of its first channel file."""
        picked = self.channels(files, channels)
        image, reference = self.plan.loader().read_image([c.path for c in picked], [c.index for c in picked])
        out = self.probabilities(image, reference.path)
        if out.shape[1:] != reference.array.shape[:3]:
            raise MedsegError(f"internal error: prediction grid {out.shape[1:]} != input {reference.array.shape[:3]}")
        return CasePrediction(out, reference, image.numpy(), picked)

    def probabilities(self, image: MetaTensor, where: Path) -> np.ndarray:
        """(C, X, Y, Z) image with its affine -> (R, X, Y, Z) float32 probabilities on the same grid."""
        data = self.preprocess({"image": image})
        logits = infer(self.net, data["image"][None].as_tensor(), self.plan.patch_size, self.overlap, self.device,
                       self.tta)
        if not torch.isfinite(logits).all():
            raise MedsegError(f"{where}: the network output is not finite (NaN or inf); on an old GPU try "
                              "--device cpu, or check the input's intensities")
        probs = MetaTensor(logits[0].sigmoid(), meta=data["image"].meta)
        probs.applied_operations = data["image"].applied_operations
        restored = T.Invertd("pred", self.preprocess, orig_keys="image", nearest_interp=False)(
            {"pred": probs, "image": data["image"]})
        return nested(restored["pred"].numpy().astype(np.float32).clip(0, 1), self.plan)  # (R, X, Y, Z)

    def labels(self, prediction: CasePrediction) -> np.ndarray:
        """(X, Y, Z) label map in the model's convention: each region thresholded at 0.5; for EM neuron models,
        uint32 neuron ids decoded from the boundary/affinity maps."""
        convention = self.plan.convention
        if convention.instances:
            return decode(prediction.probabilities, convention.targets, self.decode)
        labels = convention.from_regions((prediction.probabilities > 0.5).astype(np.uint8))
        return largest_component(labels) if self.keep_largest else labels


def largest_component(labels: np.ndarray) -> np.ndarray:
    """The label map with every voxel outside the largest 26-connected component of the foreground (all labels
    together) set to 0: stray false-positive blobs go, the main lesion keeps its inner labels. Evidence: README."""
    keep = T.KeepLargestConnectedComponent(independent=False, connectivity=3)
    return np.asarray(keep(labels[None]))[0].astype(labels.dtype)  # (1, X, Y, Z): MONAI's channel-first


def nested(probabilities: np.ndarray, plan: Plan) -> np.ndarray:
    """Each region's probability raised to that of the regions it contains (BraTS: ET ⊂ TC ⊂ WT).

    The label map paints later regions over earlier ones, so a voxel with ET > 0.5 is in TC and WT of the written
    mask; with this, thresholding each probability map at 0.5 gives exactly the written mask's regions.
    EM boundary/affinity maps are not regions of labels and are returned as they are.
    """
    if plan.convention.instances:
        return probabilities
    labels = list(plan.convention.regions.values())
    out = probabilities.copy()
    for i, outer in enumerate(labels):
        for j, inner in enumerate(labels):
            if i != j and inner <= outer:
                out[i] = np.maximum(out[i], probabilities[j])
    return out


def _channel_count(path: str) -> int:
    """Channels of a file from its header (4D NIfTI, MSD style); other formats are 3D here."""
    if suffix(path) not in NIFTI:
        return 1
    try:
        shape = nib.load(path).shape
    except Exception:
        return 1  # the reader reports the problem with the file name
    return shape[3] if len(shape) == 4 else 1
