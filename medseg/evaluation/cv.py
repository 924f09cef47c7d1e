"""Out-of-fold scores of a cross-validation (medseg.training.cv): `medseg cv-summary` and `medseg find-best`.

Every case of a cross-validation was predicted once by the fold that did not train on it; these commands score
those predictions against the cases' labels with medseg's evaluation (Dice, HD95, NSD and volumes per region,
medseg.evaluation.metrics). `find-best` then does what nnU-Net's find_best_configuration does: each configuration
alone, each pair of configurations (the mean of their out-of-fold probabilities), each with and without keeping the
largest lesion, ranked by the mean Dice over cases and regions; a candidate replaces a simpler one only when it
scores strictly higher. It writes inference.json and prints the `medseg predict` command of the winner."""

import itertools
import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medseg.data.io import read_volume
from medseg.errors import MedsegError
from medseg.evaluation.evaluate import check_grid, format_table, read_label, spacing_of, summarize, write_csv
from medseg.evaluation.metrics import DEFAULT_TOLERANCE_MM, evaluate_case
from medseg.labels import get_convention
from medseg.utils.files import write_json


@dataclass
class OutOfFold:
    """A cross-validation's out-of-fold predictions: case -> its files (absolute paths) and fold."""

    root: Path
    label_convention: str
    modalities: list[str]
    keep_largest: bool
    cases: dict[str, dict]


def out_of_fold(root: str | Path) -> OutOfFold:
    """The manifests of every fold of `root`; an error names the folds whose predictions are missing."""
    from medseg.training.cv import MANIFEST, SPLITS, fold_dir  # evaluation sits below training and inference

    root = Path(root)
    if not (root / SPLITS).is_file():
        raise MedsegError(f"{root}: not a cross-validation root (no {SPLITS}; train with --cv.folds K)")
    try:
        folds = len(json.loads((root / SPLITS).read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
        raise MedsegError(f"{root / SPLITS}: not a readable splits file ({e})") from None
    missing = [k for k in range(folds) if not (fold_dir(root, k) / MANIFEST).is_file()]
    if missing:
        raise MedsegError(f"{root}: fold(s) {missing} have no out-of-fold predictions ({MANIFEST}); train them with "
                          f"--cv.fold {missing[0]}")
    manifests = [json.loads((fold_dir(root, k) / MANIFEST).read_text()) for k in range(folds)]
    cases = {}
    for k, manifest in enumerate(manifests):
        folder = fold_dir(root, k)
        for case, entry in manifest["cases"].items():
            if case in cases:
                raise MedsegError(f"{root}: case {case} was predicted by folds {cases[case]['fold']} and {k}")
            cases[case] = {**entry, "fold": k, "mask": folder / entry["mask"],
                           "probabilities": folder / entry["probabilities"]}
    first = manifests[0]
    for k, manifest in enumerate(manifests[1:], start=1):
        if manifest["label_convention"] != first["label_convention"]:
            raise MedsegError(f"{root}: folds 0 and {k} use different label conventions")
    return OutOfFold(root, first["label_convention"], first["modalities"], bool(first.get("keep_largest")),
                     dict(sorted(cases.items())))


def truth(entry: dict, convention: str):
    """A case's label volume, checked to exist (the datalist's label file)."""
    if not entry.get("label"):
        raise MedsegError(f"{entry['mask']}: no label file recorded for this case; nothing to score against")
    return read_label(Path(entry["label"]), convention)


def cv_summary(root: str | Path, tolerance: float = DEFAULT_TOLERANCE_MM) -> dict:
    """evaluate()'s result for the out-of-fold masks as written, plus each case's fold and the mean Dice."""
    oof = out_of_fold(root)
    scores = {}
    for case, entry in tqdm(oof.cases.items(), desc="cv-summary", unit="case", disable=len(oof.cases) < 2):
        t = truth(entry, oof.label_convention)
        p = read_label(entry["mask"], oof.label_convention)
        check_grid(p, t)
        scores[case] = evaluate_case(p.array, t.array, oof.label_convention, spacing_of(t), tolerance)
    return {"root": str(oof.root), "folds": {c: e["fold"] for c, e in oof.cases.items()}, "cases": scores,
            "summary": summarize(scores), **mean_dice(scores)}


def mean_dice(cases: dict[str, dict[str, dict[str, float]]]) -> dict[str, float]:
    """The ranking score (nnU-Net's foreground mean Dice): the mean over cases of each case's mean over regions,
    and its sample SD over cases."""
    per_case = [statistics.fmean(r["dice"] for r in regions.values()) for regions in cases.values()]
    return {"mean_dice": statistics.fmean(per_case),
            "sd_dice": statistics.stdev(per_case) if len(per_case) > 1 else 0.0}


def summary_lines(result: dict) -> list[str]:
    """`region: dice mean ± sd, hd95 …, nsd …` per region, then the mean Dice."""
    lines = []
    for region, metrics in result["summary"].items():
        shown = [f"{m} {s['mean']:.3f} ± {s['sd']:.3f}" for m, s in metrics.items() if m in ("dice", "hd95", "nsd")]
        lines.append(f"{region}: " + ", ".join(shown))
    lines.append(f"mean Dice over regions: {result['mean_dice']:.4f} ± {result['sd_dice']:.4f} "
                 f"({len(result['cases'])} cases)")
    return lines


def cv_summary_command(root: str, tolerance: float, json_out: str | None, csv_out: str | None) -> int:
    result = cv_summary(root, tolerance)
    print(format_table(result))
    print("\n".join(summary_lines(result)))
    json_path = Path(json_out or Path(root) / "cv_summary.json")
    csv_path = Path(csv_out or Path(root) / "cv_summary.csv")
    write_json(json_path, result)
    write_csv(result, csv_path)
    print(f"wrote {json_path}\nwrote {csv_path}")
    return 0


def find_best(roots: list[str], tolerance: float = DEFAULT_TOLERANCE_MM) -> dict:
    """Every candidate's per-case scores and summary, and the winner (see the module docstring)."""
    from medseg.inference.postprocess import largest_component  # evaluation sits below inference

    oofs = [out_of_fold(r) for r in roots]
    first = oofs[0]
    for other in oofs[1:]:
        for what, a, b in (("label convention", first.label_convention, other.label_convention),
                           ("input channels", first.modalities, other.modalities),
                           ("cases", sorted(first.cases), sorted(other.cases))):
            if a != b:
                raise MedsegError(f"{first.root} and {other.root} differ in their {what}; only cross-validations "
                                  "of the same cases and inputs can be compared")
    members = [[i] for i in range(len(oofs))] + [list(p) for p in itertools.combinations(range(len(oofs)), 2)]
    candidates = [(m, keep) for keep in (False, True) for m in members]
    scores: list[dict] = [{} for _ in candidates]
    conv = get_convention(first.label_convention)
    for case in tqdm(first.cases, desc="find-best", unit="case", disable=len(first.cases) < 2):
        t = truth(first.cases[case], first.label_convention)
        maps = []
        for oof in oofs:
            volume = read_volume(oof.cases[case]["probabilities"])
            if volume.array.ndim != 4 or volume.array.shape[:3] != t.array.shape:
                raise MedsegError(f"{volume.path}: shape {volume.array.shape} is not (X, Y, Z, regions) on the grid "
                                  f"{t.array.shape} of {t.path}")
            maps.append(np.moveaxis(volume.array.astype(np.float32), -1, 0))  # (X, Y, Z, R) -> (R, X, Y, Z)
        for i, (m, keep) in enumerate(candidates):
            probabilities = np.mean([maps[j] for j in m], axis=0)
            labels = conv.from_regions((probabilities > 0.5).astype(np.uint8))
            labels = largest_component(labels) if keep else labels
            scores[i][case] = evaluate_case(labels, t.array, first.label_convention, spacing_of(t), tolerance)
    results = []
    for (m, keep), per_case in zip(candidates, scores, strict=True):
        models = [str(roots[j]) for j in m]
        results.append({"models": models, "keep_largest": keep, **mean_dice(per_case),
                        "summary": summarize(per_case), "cases": per_case})
    best = results[0]
    for r in results[1:]:  # simpler candidates come first and win ties
        if r["mean_dice"] > best["mean_dice"]:
            best = r
    return {"best": {k: best[k] for k in ("models", "keep_largest", "mean_dice", "sd_dice")},
            "command": predict_command(best), "candidates": results}


def predict_command(best: dict) -> str:
    flag = "--keep-largest" if best["keep_largest"] else "--no-keep-largest"
    return f"medseg predict INPUT --model {','.join(best['models'])} {flag} --output OUTPUT"


def find_best_command(roots: list[str], tolerance: float, output: str | None) -> int:
    result = find_best(roots, tolerance)
    out = Path(output) if output else Path(os.path.commonpath([os.path.abspath(r) for r in roots])) / "inference.json"
    width = max(len(",".join(r["models"])) for r in result["candidates"])
    regions = list(result["candidates"][0]["summary"])
    print(f"{'models':<{width}}  keep_largest  " + "  ".join(f"{r:>6}" for r in regions) + "  mean Dice")
    for r in result["candidates"]:
        dice = "  ".join(f"{r['summary'][g]['dice']['mean']:>6.3f}" for g in regions)
        print(f"{','.join(r['models']):<{width}}  {r['keep_largest']!s:<12}  {dice}  {r['mean_dice']:.4f}")
    best = result["best"]
    print(f"best: {','.join(best['models'])}, keep_largest {best['keep_largest']}: mean Dice {best['mean_dice']:.4f}")
    write_json(out, result)
    print(f"wrote {out}")
    print(result["command"])
    return 0
