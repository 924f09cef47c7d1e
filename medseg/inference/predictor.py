"""Predictor: a checkpoint loaded once, then region probabilities for any number of cases on their input grid.

Preprocessing is the checkpoint's Plan (the same MONAI chain as training) and is inverted with MONAI's Invertd:
reorientation and cropping are undone exactly, resampling by interpolating region probabilities back to the
original grid before thresholding (nnU-Net's order). Test-time augmentation averages the probabilities of all 8
mirrorings of each window (nnU-Net's default), at 8 times the cost.
"""

import itertools
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
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
from medseg.em.decode import DecodeParams, decode
from medseg.errors import MedsegError
from medseg.inference.channels import Channel, match_channels
from medseg.inference.postprocess import postprocess
from medseg.inference.qc import uncertainty as qc_uncertainty
from medseg.inference.voxels import resampling, stored_voxel_size, zoom, zoom_back
from medseg.models import bundled_fingerprint, resolve_model
from medseg.models.loading import build_model, load_checkpoint
from medseg.runtime import autocast_dtype, pick_device, prepare_net


def mirrored(net: torch.nn.Module, window: torch.Tensor, members: bool = False) -> torch.Tensor:
    """Logits of the mean sigmoid probability over the 8 mirrorings of a (B, C, X, Y, Z) window; with `members`,
    followed on the channel axis by each mirroring's probabilities (B, R + 8 R, ...) for quality control."""
    flips = [axes for n in range(4) for axes in itertools.combinations((2, 3, 4), n)]
    probs = [torch.flip(net(torch.flip(window, axes)), axes).float().sigmoid() for axes in flips]
    logits = torch.logit(sum(probs) / len(flips), eps=1e-6)
    return torch.cat([logits, *probs], 1) if members else logits


def infer(net: torch.nn.Module, image: torch.Tensor, patch: Sequence[int], overlap: float, device: torch.device,
          tta: bool = False, members: bool = False) -> torch.Tensor:
    """Float32 logits on the CPU for a (1, C, X, Y, Z) image, by sliding window with Gaussian blending.
    tta and members: the 8 mirrorings' probabilities follow the logits on the channel axis (see `mirrored`).

    On CUDA the whole volume is first kept on the GPU; when it does not fit, the windows still run on the GPU but
    are stitched into a buffer on the CPU (MONAI's sw_device / device split), which needs one window of GPU memory.
    """
    net = net.to(device)
    window = partial(sliding_window_inference, roi_size=list(patch), sw_batch_size=2,
                     predictor=partial(mirrored, net, members=members) if tta else net, overlap=overlap,
                     mode="gaussian", sigma_scale=0.125, progress=True)
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
    members: list[np.ndarray] | None = None  # with qc: member probabilities (R, ...) in the network's space
    network_image: np.ndarray | None = None  # with qc: the preprocessed (C, ...) image those members saw
    spacing: tuple[float, ...] | None = None  # with qc: the network space's voxel size (mm)
    uncertainty: np.ndarray | None = None  # with qc: (R, X, Y, Z) SD of the members on the input's grid
    seconds: float = 0.0  # time taken by predict_case


class Predictor:
    """A model loaded once: `predict_case(files)` for as many cases as needed.

    model: a checkpoint path, or the name of a bundled model (`medseg models`).
    channels_last / compile: medseg.runtime.prepare_net (None: the faster memory format for the device).
    decode: how EM boundary/affinity maps become neuron ids (medseg.em.decode): DecodeParams as they are, or a
        mapping of overrides of what the model's plan stores (None: the plan's, else DecodeParams' defaults).
    keep_largest: keep only the largest foreground component of label maps (None: what the model's plan says).
    lesion_flair_z: drop lesions whose FLAIR is not hyperintense (medseg.inference.postprocess; None: the plan's
        threshold, "off": never).
    voxel_size: EM stacks' (z, y, x) voxel size in nm (None: an HDF5 file's `resolution` attribute, else the
        model's); a volume whose voxel size differs from the model's by more than 1 % is resampled to the model's
        for the network and its maps back to the input grid (medseg.inference.voxels).
    """

    def __init__(self, model: str | Path, device: str = "auto", overlap: float = 0.5, tta: bool = False,
                 channels_last: bool | None = None, compile: bool = False,
                 decode: DecodeParams | Mapping | None = None, keep_largest: bool | None = None,
                 voxel_size: Sequence[float] | None = None, lesion_flair_z: float | str | None = None):
        if not 0 <= overlap < 1:
            raise MedsegError(f"--overlap must be in [0, 1), got {overlap}")
        self.source = resolve_model(model)
        self.plan, state = load_checkpoint(self.source)
        self.keep_largest = self.plan.keep_largest if keep_largest is None else keep_largest
        self.lesion_flair_z = self.plan.lesion_flair_z if lesion_flair_z is None else lesion_flair_z
        if self.lesion_flair_z == "off":
            self.lesion_flair_z = None
        self.device, self.overlap, self.tta = pick_device(device), overlap, tta
        self.voxel_size = tuple(voxel_size) if voxel_size else None
        stored = DecodeParams(**(self.plan.decode or {}))
        self.decode = decode if isinstance(decode, DecodeParams) else replace(stored, **(decode or {}))
        self.net = prepare_net(build_model(self.plan, state, self.source), self.device, channels_last, compile,
                               (2, len(self.plan.modalities), *self.plan.patch_size), autocast_dtype(self.device))
        self.preprocess = T.Compose(self.plan.preprocessing())
        self.fingerprint = self.plan.fingerprint or bundled_fingerprint(self.source, self.plan.key())

    def channels(self, files: Sequence[str], channels: Sequence[str] | None = None) -> list[Channel]:
        """The files' channels in the model's order, identified by name or by `channels` (see inference.channels)."""
        counts = [channel_count(f) for f in files]
        return match_channels(files, self.plan.modalities, channels, counts)

    def predict_case(self, files: Sequence[str], channels: Sequence[str] | None = None,
                     qc: bool = False) -> CasePrediction:
        """Region probabilities of one case on the grid of its first channel file.

        qc: also keep the members quality control compares (medseg.inference.qc): the 8 mirrorings with `tta`,
        else a second, left-right mirrored pass (twice the time; the mask still comes from the first pass alone)."""
        start = time.perf_counter()
        picked = self.channels(files, channels)
        image, reference = self.plan.loader().read_image([c.path for c in picked], [c.index for c in picked])
        qc = qc and not self.plan.convention.instances  # EM boundary maps are not regions: no QC
        factors = resampling(self.voxel_size or stored_voxel_size(reference.path), self.plan.voxel_size)
        out, extra = self.probabilities(image, reference.path, qc, factors)
        if out.shape[1:] != reference.array.shape[:3]:
            raise MedsegError(f"internal error: prediction grid {out.shape[1:]} != input {reference.array.shape[:3]}")
        return CasePrediction(out, reference, image.numpy(), picked, **extra, seconds=time.perf_counter() - start)

    def predict_volumes(self, volumes: Sequence[Volume], channels: list[Channel],
                        qc: bool = False) -> CasePrediction:
        """Region probabilities of channels already read (DICOM series, one 3D volume per modality in the model's
        order, on the first one's grid)."""
        start = time.perf_counter()
        image = np.stack([v.array for v in volumes]).astype(np.float32)  # (C, X, Y, Z)
        reference = volumes[0]
        tensor = MetaTensor(torch.from_numpy(image), affine=torch.as_tensor(reference.affine),
                            meta={"filename_or_obj": str(reference.path)})
        out, extra = self.probabilities(tensor, reference.path, qc and not self.plan.convention.instances)
        return CasePrediction(out, reference, image, channels, **extra, seconds=time.perf_counter() - start)

    def probabilities(self, image: MetaTensor, where: Path, qc: bool = False,
                      factors: Sequence[float] | None = None) -> tuple[np.ndarray, dict]:
        """(C, X, Y, Z) image with its affine -> (R, X, Y, Z) float32 probabilities on the same grid, and with `qc`
        the CasePrediction fields of quality control (members, network_image, spacing, uncertainty).

        factors: (x, y, z) zoom to the model's voxel size (medseg.inference.voxels.resampling), None for none.
        """
        if factors is not None:
            out, extra = self.probabilities(zoom(image, factors), where, qc)
            if "uncertainty" in extra:
                extra["uncertainty"] = zoom_back(extra["uncertainty"], image.shape[1:])
            return zoom_back(out, image.shape[1:]), extra
        data = self.preprocess({"image": image})
        x = data["image"][None].as_tensor()
        logits = infer(self.net, x, self.plan.patch_size, self.overlap, self.device, self.tta, members=qc)
        if not torch.isfinite(logits).all():
            raise MedsegError(f"{where}: the network output is not finite (NaN or inf); on an old GPU try "
                              "--device cpu, or check the input's intensities")
        regions = len(self.plan.regions)
        probs, extra = logits[0, :regions].sigmoid(), {}
        if qc:
            if self.tta:
                members = list(logits[0, regions:].reshape(-1, regions, *logits.shape[2:]))
            else:  # a second pass on the left-right mirrored volume (RAS: axis 0 of X, Y, Z)
                flipped = infer(self.net, torch.flip(x, (2,)), self.plan.patch_size, self.overlap, self.device)
                members = [probs, torch.flip(flipped[0], (1,)).sigmoid()]
            members = [nested(m.numpy(), self.plan) for m in members]
            extra = {"members": members, "network_image": data["image"].numpy(),
                     "spacing": tuple(float(s) for s in data["image"].pixdim[:3])}
            probs = torch.cat([probs, torch.from_numpy(qc_uncertainty(members))])
        probs = MetaTensor(probs, meta=data["image"].meta)
        probs.applied_operations = data["image"].applied_operations
        restored = T.Invertd("pred", self.preprocess, orig_keys="image", nearest_interp=False)(
            {"pred": probs, "image": data["image"]})
        restored = restored["pred"].numpy().astype(np.float32)
        if qc:
            extra["uncertainty"] = restored[regions:].clip(0, 0.5)
        return nested(restored[:regions].clip(0, 1), self.plan), extra  # (R, X, Y, Z)

    def labels(self, prediction: CasePrediction) -> np.ndarray:
        """(X, Y, Z) label map in the model's convention: each region thresholded at 0.5; for EM neuron models,
        uint32 neuron ids decoded from the boundary/affinity maps."""
        convention = self.plan.convention
        if convention.instances:
            return decode(prediction.probabilities, convention.targets, self.decode, convention.offsets)
        labels = convention.from_regions((prediction.probabilities > 0.5).astype(np.uint8))
        return postprocess(labels, prediction.image, self.plan, self.keep_largest, self.lesion_flair_z)


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


def channel_count(path: str) -> int:
    """Channels of a file from its header (4D NIfTI, MSD style); other formats are 3D here."""
    if suffix(path) not in NIFTI:
        return 1
    try:
        shape = nib.load(path).shape
    except Exception:
        return 1  # the reader reports the problem with the file name
    return shape[3] if len(shape) == 4 else 1
