"""Cross-validation, as nnU-Net users know it: `medseg train --config X --cv.folds K [--cv.fold k] [--cv.seed S]`.

The datalist's cases (its training and validation lists together, or every case folder under --data.root) are
split into K folds by a seeded shuffle; each fold trains on the others and is scored on its own cases, so every
case gets one prediction from a model that never saw it. Under `<trainer.default_root_dir>`:

    splits.json                                  nnU-Net's splits_final.json: [{"train": [case, ...], "val": [...]}]
                                                 written once, then reused (edit it to choose the folds yourself)
    fold_k/config.yaml, fold_k/checkpoints/      an ordinary training run (best.ckpt, last.ckpt)
    fold_k/validation/<case>.nii.gz              the out-of-fold masks, on each case's input grid
    fold_k/validation_probabilities/<case>.nii.gz   their region probabilities (float32, regions on the 4th axis)
    fold_k/validation.json                       which images, label and checkpoint each out-of-fold case came from

A fold's model is its final state (nnU-Net's checkpoint_final): picking the checkpoint by its Dice on the fold's own
cases would make the out-of-fold scores optimistic, so in cross-validation best.ckpt is not ranked by val/dice_mean
and holds the same weights as last.ckpt. `medseg predict --model <root>` averages the folds (medseg.inference.
ensemble), `medseg cv-summary` and `medseg find-best` score the out-of-fold predictions (medseg.evaluation.cv).
"""

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jsonargparse import Namespace

from medseg.data.io import stem, write_mask
from medseg.errors import MedsegError
from medseg.inference.channels import case_name
from medseg.inference.outputs import write_probabilities
from medseg.inference.predictor import Predictor
from medseg.utils.files import write_json

SPLITS = "splits.json"
MANIFEST = "validation.json"
DEFAULT_SEED = 12345  # nnU-Net's KFold random_state


@dataclass(frozen=True)
class CvOptions:
    """`--cv.folds`, `--cv.fold` (None: every fold in turn) and `--cv.seed`."""

    folds: int | None = None
    fold: int | None = None
    seed: int = DEFAULT_SEED

    def folds_to_run(self) -> list[int]:
        if self.folds is None or self.folds < 2:
            raise MedsegError(f"--cv.folds must be at least 2, got {self.folds}")
        if self.fold is None:
            return list(range(self.folds))
        if not 0 <= self.fold < self.folds:
            raise MedsegError(f"--cv.fold must be in 0..{self.folds - 1} for --cv.folds {self.folds}, got {self.fold}")
        return [self.fold]


def add_cv_arguments(parser) -> None:
    """The `cv` section of `medseg train` (also settable in a recipe as `cv: {folds: 5}`)."""
    parser.add_argument("--cv.folds", type=int | None, default=None,
                        help="cross-validation: split the cases into this many folds and train each one into "
                             "<default_root_dir>/fold_k (medseg.training.cv)")
    parser.add_argument("--cv.fold", type=int | None, default=None,
                        help="train only this fold (0-based), e.g. one fold per machine; default: every fold")
    parser.add_argument("--cv.seed", type=int, default=DEFAULT_SEED,
                        help=f"seed of the split's shuffle (default: {DEFAULT_SEED}); an existing splits.json wins")


def case_names(cases: list[dict]) -> list[str]:
    """A unique, file-system-safe name per case: its datalist `case` entry, or, for entries without one (their
    name is the first image's path), the image's case name (`BraTS2021_00006_flair` -> `BraTS2021_00006`) or its
    folder's name, whichever tells the cases apart."""
    ids = [str(c["case"]) for c in cases]
    if dupes := [i for i, n in Counter(ids).items() if n > 1]:
        raise MedsegError(f"cross-validation needs unique case names; listed more than once: {dupes}")
    path_like = ["/" in i or "\\" in i for i in ids]
    for derive in (lambda c: case_name(c["image"], []), lambda c: stem(c["image"][0]),
                   lambda c: Path(c["image"][0]).parent.name):
        names = [_safe(derive(c) if p else i) for c, i, p in zip(cases, ids, path_like, strict=True)]
        if len(set(names)) == len(names):
            return names
    return [_safe(i) for i in ids]


def _safe(name: str) -> str:
    return re.sub(r"[^\w.+-]+", "_", name).strip("_.") or "case"


def make_splits(names: list[str], folds: int, seed: int) -> list[dict[str, list[str]]]:
    """K folds of a seeded shuffle (sklearn KFold(shuffle=True)'s scheme): validation sets of equal size ±1."""
    if len(names) < folds:
        raise MedsegError(f"--cv.folds {folds}: needs at least {folds} cases, the data has {len(names)}")
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    val_sets = [sorted(part.tolist()) for part in np.array_split(np.array(order, dtype=object), folds)]
    return [{"train": sorted(set(names) - set(val)), "val": val} for val in val_sets]


def read_or_make_splits(path: Path, names: list[str], folds: int, seed: int) -> list[dict[str, list[str]]]:
    """The splits in `path` when it exists (checked against the cases and K), else new ones written there."""
    if not path.exists():
        splits = make_splits(names, folds, seed)
        write_json(path, splits)
        print(f"wrote {path}: {folds} folds of {len(names)} cases (seed {seed})")
        return splits
    try:
        splits = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MedsegError(f"{path}: not valid JSON ({e}); fix it or delete it to split again") from None
    check_splits(splits, names, folds, path)
    print(f"reusing {path} ({folds} folds)")
    return splits


def check_splits(splits: object, names: list[str], folds: int, path: Path) -> None:
    """An edited or stale splits.json fails here, naming what does not fit, rather than training the wrong folds."""
    hint = "; fix it or delete it to split again"
    if not isinstance(splits, list) or not all(isinstance(s, dict) and isinstance(s.get("train"), list)
                                                 and isinstance(s.get("val"), list) for s in splits):
        raise MedsegError(f"{path}: expected a list of {{\"train\": [...], \"val\": [...]}} folds{hint}")
    if len(splits) != folds:
        raise MedsegError(f"{path}: has {len(splits)} folds but --cv.folds is {folds}{hint}")
    known = set(names)
    seen: Counter = Counter(c for s in splits for c in s["val"])
    if unknown := sorted({c for s in splits for c in s["train"] + s["val"]} - known):
        raise MedsegError(f"{path}: cases not in the data: {unknown}{hint}")
    if twice := sorted(c for c, n in seen.items() if n > 1):
        raise MedsegError(f"{path}: cases in more than one fold's val list: {twice}{hint}")
    if missing := sorted(known - set(seen)):
        raise MedsegError(f"{path}: data cases in no fold's val list: {missing}{hint}")
    for k, s in enumerate(splits):
        if overlap := sorted(set(s["train"]) & set(s["val"])):
            raise MedsegError(f"{path}: fold {k} trains on its own val cases {overlap}{hint}")
        if not s["train"] or not s["val"]:
            raise MedsegError(f"{path}: fold {k} has an empty train or val list{hint}")


def fold_dir(root: Path, fold: int) -> Path:
    return root / f"fold_{fold}"


def fold_checkpoint(folder: Path) -> Path:
    """The fold's model: best.ckpt (in cross-validation, the final model), else last.ckpt."""
    for name in ("best.ckpt", "last.ckpt"):
        if (folder / "checkpoints" / name).is_file():
            return folder / "checkpoints" / name
    raise MedsegError(f"{folder}: no checkpoints/best.ckpt or last.ckpt (train it with --cv.fold "
                      f"{folder.name.removeprefix('fold_')})")


def train_folds(argv: list[str], config: Namespace, options: CvOptions) -> int:
    """Split (or reuse splits.json), then train each requested fold into fold_k and predict its own cases.

    config: the parsed `medseg train` configuration (the data section lists the cases; trainer.default_root_dir
    is the cross-validation's root)."""
    from medseg.data.datamodule import SegDataModule
    from medseg.training.cli import fit, train_cli  # the training CLI imports this module

    to_run = options.folds_to_run()
    train, val = SegDataModule(**config["data"].as_dict()).cases()
    cases = train + val
    names = case_names(cases)
    by_name = dict(zip(names, cases, strict=True))
    root = Path(config["trainer"]["default_root_dir"] or Path.cwd())
    splits = read_or_make_splits(root / SPLITS, names, options.folds, options.seed)
    for k in to_run:
        folder = fold_dir(root, k)
        print(f"fold {k}: training on {len(splits[k]['train'])} cases, out-of-fold {splits[k]['val']}")
        cli = train_cli([*argv, f"--trainer.default_root_dir={folder}", "--cv.folds=null", "--cv.fold=null",
                         "--checkpoint.monitor=null"])
        cli.datamodule.split = ([by_name[n] for n in splits[k]["train"]], [by_name[n] for n in splits[k]["val"]])
        (folder / MANIFEST).unlink(missing_ok=True)  # a retrained fold is incomplete until predicted again
        fit(cli)
        if cli.trainer.is_global_zero:
            predict_out_of_fold(fold_checkpoint(folder), folder, {n: by_name[n] for n in splits[k]["val"]}, k)
    return 0


def predict_out_of_fold(checkpoint: Path, folder: Path, cases: dict[str, dict], fold: int) -> Path:
    """Each of the fold's cases predicted once on its input grid, mask and probabilities kept, then the manifest
    (written last: a fold with a validation.json is complete)."""
    predictor = Predictor(checkpoint)
    entries = {}
    for name, case in cases.items():
        prediction = predictor.predict_case(case["image"])
        mask = Path("validation") / f"{name}.nii.gz"
        probabilities = Path("validation_probabilities") / f"{name}.nii.gz"
        write_mask(predictor.labels(prediction), prediction.reference, folder / mask)
        write_probabilities(prediction.probabilities, prediction.reference, folder / probabilities)
        entries[name] = {"image": case["image"], "label": case.get("label"), "mask": str(mask),
                         "probabilities": str(probabilities)}
    manifest = {"fold": fold, "checkpoint": str(checkpoint.relative_to(folder)),
                "label_convention": predictor.plan.label_convention, "modalities": list(predictor.plan.modalities),
                "keep_largest": predictor.keep_largest, "cases": entries}
    write_json(folder / MANIFEST, manifest)
    print(f"fold {fold}: out-of-fold predictions of {len(entries)} cases in {folder / 'validation'}")
    return folder / MANIFEST
