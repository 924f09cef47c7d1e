"""How a model holds up when the same labelled cases look as scans from other sites do (issue 28).

    medseg robustness --model brats --datalist brats.json --cases brats_2013_pat0001_1 --output robustness.json

Each case of an MSD-style datalist (images in the model's channel order, a label) is perturbed on its own grid the
way sites differ — intensity scale and offset, gamma, bias field, noise, blur, 3 mm slices resampled back to 1 mm,
a partial field of view, a tighter or looser skull strip — and a tumour-free brain is made by mirroring the
healthier hemisphere over the other. Each version is predicted as `medseg predict` would (the model's plan, its
postprocessing) and scored: Dice of every region, and the predicted whole tumour more than 5 voxels away from the
reference tumour (mL), the false positives that matter on scans from elsewhere. The perturbations are MONAI
transforms where MONAI has one, with fixed seeds: the same command gives the same table.
"""

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from monai import transforms as T
from monai.data import MetaTensor
from scipy import ndimage

from medseg.data.datasets import read_datalist
from medseg.data.io import read_volume
from medseg.data.mirror import healthy_mirror
from medseg.errors import MedsegError
from medseg.labels import get_convention
from medseg.utils.files import atomic_write

FAR_VOXELS = 5  # a predicted voxel further than this from the reference tumour is a far false positive
SLAB_MM = 30.0  # the partial field of view: a 3 cm slab through the tumour's centre
MARGIN_VOXELS = 3  # skull-strip margin change (1 mm grids: 3 mm)

# image (C, X, Y, Z) float32, background 0; brain mask (X, Y, Z); rng -> perturbed image
Perturbation = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


def _monai(transform: Callable) -> Perturbation:
    """A MONAI array transform applied to the brain only (skull-stripped scans keep a zero background)."""

    def apply(image: np.ndarray, brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if hasattr(transform, "set_random_state"):
            transform.set_random_state(int(rng.integers(2**31)))
        out = np.asarray(transform(torch.from_numpy(image)), dtype=np.float32)
        return np.where(brain, out, 0).astype(np.float32)

    return apply


def _per_channel(transform: Callable) -> Perturbation:
    """A MONAI array transform that works on one channel's (1, X, Y, Z) range at a time (gamma: min-max)."""

    def apply(image: np.ndarray, brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = np.stack([np.asarray(transform(torch.from_numpy(c[None])))[0] for c in image]).astype(np.float32)
        return np.where(brain, out, 0).astype(np.float32)

    return apply


def _noise(image: np.ndarray, brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of 5 % of each channel's 99th brain percentile (a low-SNR scanner)."""
    scale = np.array([np.percentile(c[brain], 99) for c in image], dtype=np.float32)
    noise = T.RandGaussianNoise(prob=1.0, mean=0.0, std=1.0)
    noise.set_random_state(int(rng.integers(2**31)))
    unit = np.asarray(noise(torch.zeros_like(torch.from_numpy(image))), dtype=np.float32)
    return np.where(brain, image + 0.05 * scale[:, None, None, None] * unit, 0).astype(np.float32)


def _thick_slices(factor: int) -> Perturbation:
    """Acquired with `factor` times thicker axial slices (that many averaged) and resampled back to the grid, as
    clinical scans are (TCGA's FLAIR often has 5-6 mm slices)."""

    def apply(image: np.ndarray, brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        shape = image.shape[1:]
        down = T.Resize((shape[0], shape[1], math.ceil(shape[2] / factor)), mode="area")(torch.from_numpy(image))
        up = np.asarray(T.Resize(shape, mode="trilinear")(down), dtype=np.float32)
        return np.where(brain, up, 0).astype(np.float32)

    return apply


def _skull_margin(voxels: int) -> Perturbation:
    """Another skull strip: eroded by `voxels` (tighter), or dilated (looser, the rim filled with the brain's 90th
    percentile per channel, as dura and scalp left behind are bright on FLAIR and T1ce)."""

    def apply(image: np.ndarray, brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        ball = ndimage.generate_binary_structure(3, 1)
        if voxels < 0:
            kept = ndimage.binary_erosion(brain, ball, iterations=-voxels)
            return np.where(kept, image, 0).astype(np.float32)
        rim = ndimage.binary_dilation(brain, ball, iterations=voxels) & ~brain
        fill = np.array([np.percentile(c[brain], 90) for c in image], dtype=np.float32)
        return np.where(rim, fill[:, None, None, None], image).astype(np.float32)

    return apply


PERTURBATIONS: dict[str, Perturbation | None] = {
    "none": None,
    "scale x2.5": _monai(T.ScaleIntensity(minv=None, maxv=None, factor=1.5)),  # x (1 + factor)
    "offset +20% of max": lambda im, b, r: np.where(b, im + 0.2 * im.max(axis=(1, 2, 3), keepdims=True), 0),
    "gamma 0.7": _per_channel(T.AdjustContrast(gamma=0.7)),
    "gamma 1.5": _per_channel(T.AdjustContrast(gamma=1.5)),
    "bias field 0.3": _monai(T.RandBiasField(degree=3, coeff_range=(0.3, 0.3), prob=1.0)),
    "noise 5%": _noise,
    "blur 1 mm": _monai(T.GaussianSmooth(sigma=1.0)),
    "1x1x3 mm and back": _thick_slices(3),
    "1x1x6 mm and back": _thick_slices(6),
    "3 cm slab (FOV)": None,  # made in perturb(): it needs the tumour's position
    "skull strip -3 mm": _skull_margin(-MARGIN_VOXELS),
    "skull strip +3 mm": _skull_margin(MARGIN_VOXELS),
    "healthy hemisphere mirrored": None,  # made in perturb(): it changes the reference too
}


def slab(shape: Sequence[int], tumour: np.ndarray, spacing_z: float) -> np.ndarray:
    """(X, Y, Z) mask of the axial slab of SLAB_MM through the reference tumour's centre (the last axis)."""
    z = np.nonzero(tumour.any(axis=(0, 1)))[0]
    centre = int(round(z.mean())) if z.size else shape[2] // 2
    half = int(round(SLAB_MM / spacing_z / 2))
    keep = np.zeros(shape, dtype=bool)
    keep[:, :, max(0, centre - half): centre + half] = True
    return keep


def far_false_positive(pred: np.ndarray, truth: np.ndarray, far: int = FAR_VOXELS) -> int:
    """Voxels of the binary prediction more than `far` voxels (Euclidean) from every reference voxel; all of
    them when the reference is empty."""
    if not truth.any():
        return int(pred.sum())
    distance = ndimage.distance_transform_edt(~truth.astype(bool))
    return int((pred.astype(bool) & (distance > far)).sum())


def score(pred: np.ndarray, truth: np.ndarray, regions: Sequence[str], ml_per_voxel: float,
          within: np.ndarray | None = None) -> dict[str, float]:
    """Dice per region (R, X, Y, Z masks; 1 when both are empty) and whole-tumour volumes (mL): predicted,
    reference, and predicted far from the reference. `within`: score only inside this mask (the slab)."""
    if within is not None:
        pred, truth = pred & within, truth & within
    out = {}
    for name, p, t in zip(regions, pred, truth, strict=True):
        total = int(p.sum()) + int(t.sum())
        out[f"dice_{name}"] = 1.0 if total == 0 else 2.0 * int((p & t).sum()) / total
    out["wt_pred_ml"] = float(pred[0].sum()) * ml_per_voxel
    out["wt_ref_ml"] = float(truth[0].sum()) * ml_per_voxel
    out["wt_far_fp_ml"] = far_false_positive(pred[0], truth[0]) * ml_per_voxel
    return out


def perturb(name: str, image: np.ndarray, label: np.ndarray, brain: np.ndarray, spacing: Sequence[float],
            seed: int, affine: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The perturbed image, its reference label and the mask to score in (None: everywhere)."""
    rng = np.random.default_rng(seed)
    if name == "3 cm slab (FOV)":
        keep = slab(image.shape[1:], label > 0, spacing[2])
        return np.where(keep, image, 0).astype(np.float32), label, keep
    if name == "healthy hemisphere mirrored":
        img, lab, _ = healthy_mirror(image, label, brain, affine)
        return img, lab, None
    fn = PERTURBATIONS[name]
    out = image if fn is None else fn(image, brain, rng)
    return np.clip(out, 0, None).astype(np.float32), label, None  # scanner intensities are >= 0


def robustness(model: str, datalist: str, cases: Sequence[str] = (), perturbations: Sequence[str] = (),
               reference_convention: str = "brats2013", seed: int = 0, device: str = "auto",
               keep_largest: bool | None = None, lesion_flair_z: float | str | None = None) -> dict:
    """Scores of every (case, perturbation) for one model: {case: {perturbation: scores}}; the postprocessing
    is the model's plan's unless given (as `medseg predict`'s flags)."""
    from medseg.inference.ensemble import load_predictor
    from medseg.inference.postprocess import postprocess

    names = list(perturbations) or list(PERTURBATIONS)
    unknown = sorted(set(names) - set(PERTURBATIONS))
    if unknown:
        raise MedsegError(f"unknown perturbations {unknown}; known: {', '.join(PERTURBATIONS)}")
    train, val = read_datalist(datalist)
    every = {c.get("case") or Path(c["label"]).parent.name: c for c in train + val}
    picked = list(cases) or list(every)
    missing = [c for c in picked if c not in every]
    if missing:
        raise MedsegError(f"{datalist}: no cases named {missing}; it has {', '.join(every)}")
    predictor = load_predictor(model, device=device, keep_largest=keep_largest, lesion_flair_z=lesion_flair_z)
    ref_conv, model_conv = get_convention(reference_convention), predictor.plan.convention
    results: dict[str, dict] = {}
    for case in picked:
        entry = every[case]
        files = [entry["image"]] if isinstance(entry["image"], str) else list(entry["image"])
        image, reference = predictor.plan.loader().read_image(files)
        affine = image.affine
        raw = image.numpy()
        raw = raw - raw.min(axis=(1, 2, 3), keepdims=True)  # background to 0, as the model's preprocessing does
        brain = (raw != 0).any(axis=0)
        label_volume = read_volume(entry["label"])
        label = np.asarray(label_volume.array, dtype=np.int32)
        try:
            ref_conv.check(label, str(label_volume.path))
        except ValueError as e:
            raise MedsegError(str(e)) from None
        spacing = [float(s) for s in np.linalg.norm(reference.affine[:3, :3], axis=0)]
        ml = float(np.prod(spacing)) / 1000.0
        results[case] = {}
        for name in names:
            start = time.perf_counter()
            img, lab, within = perturb(name, raw, label, brain, spacing, seed, np.asarray(affine))
            probs, _ = predictor.probabilities(MetaTensor(torch.from_numpy(img), affine=affine), reference.path)
            labels = postprocess(model_conv.from_regions((probs > 0.5).astype(np.uint8)), img, predictor.plan,
                                 predictor.keep_largest, predictor.lesion_flair_z)
            pred = model_conv.to_regions(labels[None]).astype(bool)
            truth = ref_conv.to_regions(lab[None]).astype(bool)
            results[case][name] = score(pred, truth, list(model_conv.regions), ml, within)
            results[case][name]["seconds"] = round(time.perf_counter() - start, 1)
            print(f"{case} | {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in results[case][name].items()),
                  file=sys.stderr, flush=True)
    return results


def markdown(result: dict) -> str:
    """The report's tables, one per case, as the docs show them."""
    lines = []
    for case, rows in result["cases"].items():
        lines += [f"**{case}** ({result['heldout'].get(case, 'role not given')})", "",
                  "| perturbation | WT Dice | TC Dice | ET Dice | WT predicted / reference (mL) | "
                  "WT > 5 voxels from the tumour (mL) |", "|---|---|---|---|---|---|"]
        for name, s in rows.items():
            lines.append(f"| {name} | {s['dice_wt']:.3f} | {s['dice_tc']:.3f} | {s['dice_et']:.3f} | "
                         f"{s['wt_pred_ml']:.1f} / {s['wt_ref_ml']:.1f} | {s['wt_far_fp_ml']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def compare_markdown(before: dict, after: dict) -> str:
    """Side-by-side tables of two runs (before: the earlier model) over the cases and perturbations both have."""
    lines = [f"before: `{before['model']}`; after: `{after['model']}`", ""]
    for case, rows in after["cases"].items():
        if case not in before["cases"]:
            continue
        lines += [f"**{case}** (before: {before['heldout'].get(case)}; after: {after['heldout'].get(case)})", "",
                  "| perturbation | WT Dice before → after | TC | ET | WT > 5 voxels from the tumour (mL) |",
                  "|---|---|---|---|---|"]
        for name, s in rows.items():
            b = before["cases"][case].get(name)
            if b is None:
                continue
            lines.append(f"| {name} | {b['dice_wt']:.3f} → {s['dice_wt']:.3f} | {b['dice_tc']:.3f} → "
                         f"{s['dice_tc']:.3f} | {b['dice_et']:.3f} → {s['dice_et']:.3f} | "
                         f"{b['wt_far_fp_ml']:.1f} → {s['wt_far_fp_ml']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def robustness_command(model: str, datalist: str, cases: Sequence[str], perturbations: Sequence[str],
                       output: str | None, heldout: Sequence[str], convention: str, seed: int, device: str,
                       argv: Sequence[str], compare: str | None = None, keep_largest: bool | None = None,
                       lesion_flair_z: float | str | None = None) -> int:
    """`medseg robustness`: run, write the JSON (with the command line and which cases were held out), print the
    tables (with `compare`, an earlier run's JSON, side by side with it)."""
    before = None
    if compare:
        try:
            before = json.loads(Path(compare).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise MedsegError(f"{compare}: not a robustness JSON ({e})") from None
    scores = robustness(model, datalist, cases, perturbations, convention, seed, device, keep_largest,
                        lesion_flair_z)
    roles = {c: ("held out from this model's training" if c in heldout else "in this model's training set")
             for c in scores}
    result = {"command": "medseg robustness " + " ".join(argv), "model": model, "seed": seed,
              "heldout": roles, "cases": scores}
    if output:
        atomic_write(Path(output), lambda p: p.write_text(json.dumps(result, indent=1)))
    print(compare_markdown(before, result) if before else markdown(result))
    return 0
