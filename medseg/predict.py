"""`medseg predict`: sliding-window inference on one case, written on the input's exact grid and header.

Preprocessing is rebuilt from the checkpoint (same MONAI chain as training) and inverted with MONAI's Invertd:
reorientation and cropping are undone exactly, resampling by interpolating region probabilities back to the
original grid before thresholding (nnU-Net's order). The header of the first input file is copied to the mask.
"""

import sys
import time
from functools import partial
from pathlib import Path

import torch
from monai import transforms as T
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference

from medseg.data.datasets import case_files
from medseg.data.io import TIFF, Volume, suffix, write_mask
from medseg.data.transforms import LoadCased, preprocess
from medseg.errors import MedsegError
from medseg.labels import get_convention
from medseg.nets import build_net


def load_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """(medseg metadata, network state_dict), loaded with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise MedsegError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise MedsegError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(ckpt, dict) or "medseg" not in ckpt or "state_dict" not in ckpt:
        raise MedsegError(f"{path}: not a medseg checkpoint (no 'medseg' metadata); train it with medseg train")
    state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    return ckpt["medseg"], state


def build_model(meta: dict, state: dict, path: str | Path) -> torch.nn.Module:
    try:
        net = build_net(meta["arch"], len(meta["modalities"]), len(meta["regions"]), **meta["net"])
        net.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise MedsegError(f"{path}: checkpoint does not fit this medseg version ({str(e).splitlines()[0]})") from None
    return net.eval()


def resolve_inputs(inputs: list[str], modalities: list[str]) -> tuple[list[str], str]:
    """Channel files in model order and a case name, from a case folder, a 4D file or per-channel files."""
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.exists():
            raise MedsegError(f"{p}: no such file or directory")
    if len(paths) == 1 and paths[0].is_dir():
        case = case_files(paths[0], modalities)
        return case["image"], paths[0].resolve().name
    if any(p.is_dir() for p in paths):
        raise MedsegError("give one case folder, or image files only")
    name = paths[0].name[: -len(suffix(paths[0]))] if suffix(paths[0]) else paths[0].name
    for m in modalities:
        name = name.removesuffix(f"_{m}")
    return [str(p) for p in paths], name


def default_output(case: str, em_tiff: bool) -> Path:
    return Path.cwd() / f"{case}_pred{'.tif' if em_tiff else '.nii.gz'}"


def pick_device(device: str) -> torch.device:
    """`auto` is the GPU when PyTorch sees one, else the CPU; asking for `cuda` without one is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise MedsegError("--device cuda: no CUDA device is available")
    return torch.device(device)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA only: bfloat16 where the GPU has it (its range never overflows), else float16.
    None (full precision) on the CPU, where autocast is slower and buys no memory that matters."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def infer(net: torch.nn.Module, image: torch.Tensor, patch: list[int], overlap: float,
          device: torch.device) -> torch.Tensor:
    """Float32 logits on the CPU for a (1, C, X, Y, Z) image, by sliding window with Gaussian blending.

    On CUDA the whole volume is first kept on the GPU; when it does not fit, the windows still run on the GPU but
    are stitched into a buffer on the CPU (MONAI's sw_device / device split), which needs one window of GPU memory.
    """
    window = partial(sliding_window_inference, roi_size=patch, sw_batch_size=2, predictor=net.to(device),
                     overlap=overlap, mode="gaussian", sigma_scale=0.125, progress=True)
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


def predict(inputs: list[str], model: str, output: str | None = None, *, overwrite: bool = False,
            device: str = "auto", overlap: float = 0.5) -> Path:
    """Segment one case and write its label map; returns the output path."""
    start = time.perf_counter()
    meta, state = load_checkpoint(model)
    net = build_model(meta, state, model)
    files, case = resolve_inputs(inputs, meta["modalities"])
    out = Path(output) if output else default_output(case, suffix(files[0]) in TIFF)
    if any(out.resolve() == Path(f).resolve() for f in files):
        raise MedsegError(f"{out}: refusing to overwrite an input with the mask")
    if out.exists() and not overwrite:
        raise MedsegError(f"{out}: already exists (use --overwrite to replace it)")
    if not 0 <= overlap < 1:
        raise MedsegError(f"--overlap must be in [0, 1), got {overlap}")

    convention = get_convention(meta["label_convention"])
    load = LoadCased(len(meta["modalities"]), voxel_size=meta["voxel_size"])
    pre = T.Compose(preprocess(["image"], meta["spacing"], meta["crop_foreground"], meta["normalize"] == "nonzero"))
    image, reference = load.read_image(files)
    data = pre({"image": image})

    logits = infer(net, data["image"][None].as_tensor(), meta["patch_size"], overlap, pick_device(device))
    probs = MetaTensor(logits[0].sigmoid(), meta=data["image"].meta)
    probs.applied_operations = data["image"].applied_operations
    restored = T.Invertd("pred", pre, orig_keys="image", nearest_interp=False)({"pred": probs, "image": data["image"]})
    masks = (restored["pred"].numpy() > 0.5).astype("uint8")  # (R, X, Y, Z) on the input's voxel grid
    label = convention.from_regions(masks)
    check_grid(label, reference)
    write_mask(label, reference, out)
    found = ", ".join(f"{r} {int(m.sum())}" for r, m in zip(convention.regions, masks, strict=True))
    print(f"wrote {out} ({case}: voxels {found}; {time.perf_counter() - start:.1f} s)")
    return out


def check_grid(label, reference: Volume) -> None:
    if label.shape != reference.array.shape[:3]:
        raise MedsegError(f"internal error: mask shape {label.shape} != input {reference.array.shape[:3]}")
