"""`medseg evaluate PRED GT`: per-case, per-region metrics of predicted label maps against ground truth.

PRED and GT are two files or two folders; cases are matched by name once extensions and suffixes such as `_pred`,
`_seg`, `-gt` are stripped, and a GT folder may hold BraTS case folders (`<case>/<case>_seg.nii.gz`). A prediction
must lie on its ground truth's grid (same shape and affine): metrics are never computed across a resampling.
Predictions without ground truth are an error; ground truth without prediction is reported and skipped (nnU-Net's
evaluate_folder also scores the predictions it is given).
"""

import csv
import re
import statistics
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medseg.data.io import Volume, is_image, read_volume, stem, suffix
from medseg.errors import MedsegError
from medseg.evaluation.metrics import DEFAULT_TOLERANCE_MM, evaluate_case
from medseg.labels import DEFAULT_CONVENTION, get_convention
from medseg.utils.files import atomic_write, write_json

ROLE_SUFFIX = re.compile(r"([._-](pred|prediction|seg|segmentation|gt|label|labels|mask|ids|lzf))+$", re.IGNORECASE)
AFFINE_TOLERANCE = 1e-3  # of a voxel: NIfTI stores affines as float32, so equal grids differ by ~1e-6 voxel


def case_name(path: Path) -> str:
    """`BraTS2021_00006_seg.nii.gz`, `BraTS2021_00006_pred.nii.gz` → `BraTS2021_00006`."""
    name = stem(path)
    return ROLE_SUFFIX.sub("", name) or name


def find_cases(path: Path) -> dict[str, Path]:
    """Case name → label file, for one file or a folder of files and/or BraTS case folders."""
    if not path.exists():
        raise MedsegError(f"{path}: no such file or directory")
    if path.is_file():
        return {case_name(path): path}
    cases: dict[str, Path] = {}
    for entry in sorted(path.iterdir()):
        if entry.is_dir():
            name, file = entry.name, label_in_case_folder(entry)
        elif is_image(entry):
            name, file = case_name(entry), entry
        else:
            continue
        if file is None:
            continue
        if name in cases:
            raise MedsegError(f"{path}: two files for case {name}: {cases[name].name} and {file.name}")
        cases[name] = file
    if not cases:
        raise MedsegError(f"{path}: no label maps found (expected files like <case>_seg.nii.gz or case folders)")
    return cases


def label_in_case_folder(folder: Path) -> Path | None:
    """The one label file in a case folder: named with a role suffix (`<case>_seg.nii.gz`), or the only image."""
    images = [p for p in sorted(folder.iterdir()) if p.is_file() and is_image(p)]
    labelled = [p for p in images if case_name(p) != p.name[: -len(suffix(p))]]
    picked = labelled if labelled else images if len(images) == 1 else []
    if len(picked) > 1:
        raise MedsegError(f"{folder}: several label files: {[p.name for p in picked]}")
    return picked[0] if picked else None


def pair_cases(pred: Path, gt: Path) -> dict[str, tuple[Path, Path]]:
    """Case → (prediction, ground truth); a single file pair is one case named after the ground truth."""
    if pred.is_file() and gt.is_file():
        return {case_name(gt): (pred, gt)}
    if pred.is_file() != gt.is_file() and pred.exists() and gt.exists():
        raise MedsegError(f"{pred if pred.is_file() else gt}: give two files or two folders, not one of each")
    preds, truths = find_cases(pred), find_cases(gt)
    for case, file in preds.items():
        if case not in truths:
            raise MedsegError(f"{file}: no ground truth for case {case} in {gt}")
    missing = sorted(set(truths) - set(preds))
    if missing:
        print(f"warning: no prediction for {len(missing)} ground-truth case(s), not scored: {', '.join(missing)}",
              file=sys.stderr)
    return {case: (preds[case], truths[case]) for case in preds}


def read_label(path: Path, convention: str) -> Volume:
    """A 3D label map whose values the convention allows, as an integer array."""
    volume = read_volume(path)
    if volume.array.ndim != 3:
        raise MedsegError(f"{path}: expected a 3D label map, got shape {volume.array.shape}")
    get_convention(convention).check(volume.array, str(path), training=False)
    volume.array = volume.array.astype(np.int64 if volume.array.max(initial=0) > 2**31 - 1 else np.int32)
    return volume


def spacing_of(volume: Volume) -> tuple[float, float, float]:
    """Voxel size along each array axis: the length of the affine's columns (mm for NIfTI/ITK)."""
    return tuple(float(s) for s in np.linalg.norm(volume.affine[:3, :3], axis=0))


def check_grid(pred: Volume, truth: Volume) -> None:
    """Same shape, and where both files carry geometry (not EM stacks) the same affine."""
    if pred.array.shape != truth.array.shape:
        raise MedsegError(f"{pred.path}: shape {pred.array.shape} differs from the ground truth's "
                          f"{truth.array.shape} ({truth.path}); predict on the ground truth's grid")
    if pred.source is None or truth.source is None:
        return
    tolerance = AFFINE_TOLERANCE * min(spacing_of(truth))
    difference = float(np.abs(pred.affine - truth.affine).max())
    if difference > tolerance:
        raise MedsegError(f"{pred.path}: affine differs from the ground truth's ({truth.path}) by up to "
                          f"{difference:.4g} mm; predict on the ground truth's grid")


def evaluate(pred: str | Path, gt: str | Path, convention: str = DEFAULT_CONVENTION,
             tolerance: float = DEFAULT_TOLERANCE_MM, instances: bool = False) -> dict:
    """{"cases": {case: {region: {metric: value}}}, "summary": {region: {metric: {mean, sd, median}}}}.

    instances: both volumes hold neuron ids (any non-negative integers), whatever `convention` says."""
    convention = "em_boundary" if instances else convention
    get_convention(convention)  # an unknown name fails before any file is read
    if not (np.isfinite(tolerance) and tolerance >= 0):
        raise MedsegError(f"--tolerance must be a distance in mm >= 0, got {tolerance}")
    pairs = pair_cases(Path(pred), Path(gt))
    cases = {}
    for case, (pred_file, gt_file) in tqdm(pairs.items(), desc="evaluate", unit="case", disable=len(pairs) < 2):
        p, t = read_label(pred_file, convention), read_label(gt_file, convention)
        check_grid(p, t)
        cases[case] = evaluate_case(p.array, t.array, convention, spacing_of(t), tolerance, instances)
    return {"cases": cases, "summary": summarize(cases)}


def summarize(cases: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean, sample SD (0 for one case) and median of every region's metrics over the cases."""
    first = next(iter(cases.values()))
    summary = {}
    for region, metrics in first.items():
        summary[region] = {}
        for metric in metrics:
            values = [scores[region][metric] for scores in cases.values()]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            summary[region][metric] = {"mean": statistics.fmean(values), "sd": sd,
                                       "median": statistics.median(values)}
    return summary


def rows(result: dict) -> list[dict]:
    """One flat row per case × region, for the CSV and the table."""
    return [{"case": case, "region": region, **metrics}
            for case, regions in result["cases"].items() for region, metrics in regions.items()]


def write_csv(result: dict, out: Path) -> None:
    table = rows(result)

    def write(path: Path) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)

    atomic_write(out, write)


def format_table(result: dict) -> str:
    """Per case × region rows, then the mean over cases of each region."""
    table = rows(result)
    metrics = [k for k in table[0] if k not in ("case", "region")]
    n = len(result["cases"])
    means = [{"case": f"mean of {n}", "region": region, **{m: s["mean"] for m, s in stats.items()}}
             for region, stats in result["summary"].items()]
    width = max(len(r["case"]) for r in table + means)
    lines = [f"{'case':<{width}}  {'region':<9}" + "".join(f"{m:>{max(len(m), 8) + 2}}" for m in metrics)]
    for r in table + means:
        lines.append(f"{r['case']:<{width}}  {r['region']:<9}"
                     + "".join(f"{r[m]:>{max(len(m), 8) + 2}.3f}" for m in metrics))
    return "\n".join(lines)


def evaluate_command(pred: str, gt: str, convention: str, tolerance: float, instances: bool,
                     csv_out: str | None, json_out: str | None) -> int:
    """The CLI: evaluate, print the table, write the CSV and JSON asked for."""
    result = evaluate(pred, gt, convention, tolerance, instances)
    print(format_table(result))
    if csv_out:
        write_csv(result, Path(csv_out))
        print(f"wrote {csv_out}")
    if json_out:
        write_json(json_out, result)
        print(f"wrote {json_out}")
    return 0
