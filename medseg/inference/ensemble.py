"""Ensembles: `medseg predict CASES --model <cv root>` averages the folds, `--model a,b` averages configurations.

As nnU-Net's predictor does with its folds, every member (one loaded Predictor each) predicts the case on its own
plan, its region probabilities are brought back to the input's grid (Predictor.probabilities: Invertd, nnU-Net's
order), and only then averaged; the mask is the mean thresholded at 0.5. The mean of nested maps (ET ⊂ TC ⊂ WT,
predictor.nested) is nested, so the written mask and the saved mean probabilities agree exactly.

A model spec is a comma-separated list of items; each is a cross-validation root (its folds, medseg.training.cv),
a training run folder (its best.ckpt), a checkpoint file or a bundled model name (a bundled ensemble, such as
`brats`, counts as one item per member). Each item is averaged over its
folds first and the items are then averaged with equal weight (nnU-Net ensembles configurations the same way), so
a 5-fold configuration does not outvote a 3-fold one. The members' disagreement, a quality signal (issue 27), is
available through `predict_members` (every member's maps) and `spread` (their voxel-wise standard deviation).
"""

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from monai.data import MetaTensor

from medseg.data.io import Volume
from medseg.errors import MedsegError
from medseg.inference.channels import Channel
from medseg.inference.predictor import CasePrediction, Predictor
from medseg.models import bundled_members, cards, resolve_model


def model_groups(spec: str) -> list[list[Path]]:
    """The checkpoints of each comma-separated item of a model spec (a CV root: one per fold, in fold order)."""
    if Path(spec).exists():  # a path that itself holds a comma
        items = [spec]
    else:
        items = [s.strip() for s in spec.split(",")]
    if not all(items):
        raise MedsegError(f"--model {spec!r}: an empty item in the comma-separated list")
    return [group for item in items for group in item_groups(item)]


def is_bundled_ensemble(item: str) -> bool:
    """A bundled model's name (not a path) whose card lists `members`: several networks averaged."""
    return not Path(item).exists() and item in cards() and bool(cards()[item].get("members"))


def item_groups(item: str) -> list[list[Path]]:
    """A bundled ensemble's members as configurations of their own; any other item as one."""
    if is_bundled_ensemble(item):
        return [[member] for member in bundled_members(item)]
    return [item_checkpoints(item)]


def item_checkpoints(item: str) -> list[Path]:
    from medseg.training.cv import SPLITS, fold_checkpoint, fold_dir  # training depends on inference, not back

    path = Path(item)
    if not path.is_dir():
        return [resolve_model(item)]
    if (path / SPLITS).is_file():
        try:
            folds = len(json.loads((path / SPLITS).read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
            raise MedsegError(f"{path / SPLITS}: not a readable splits file ({e})") from None
        return [fold_checkpoint(fold_dir(path, k)) for k in range(folds)]
    if (path / "checkpoints").is_dir():
        return [fold_checkpoint(path)]
    raise MedsegError(f"{path}: not a model folder (expected a cross-validation root with {SPLITS} or a training "
                      "run with checkpoints/best.ckpt)")


def load_predictor(model: str, keep_largest: bool | None = None, **kwargs) -> "Predictor | Ensemble":
    """One Predictor for a single checkpoint, else an Ensemble of one Predictor per member."""
    groups = model_groups(model)
    if len(groups) == 1 and len(groups[0]) == 1:
        return Predictor(groups[0][0], keep_largest=keep_largest, **kwargs)
    return Ensemble(groups, keep_largest=keep_largest, qc_from_first=is_bundled_ensemble(model), **kwargs)


class Ensemble:
    """Several loaded models answering as one Predictor (predict_case, labels, plan, channels).

    groups: the checkpoints of each configuration; configurations weigh equally, folds within one equally.
    keep_largest: None keeps the largest lesion only when every member's plan says so.
    qc_from_first: quality control from the first member's passes only (bundled ensembles, see predict_case).
    kwargs: Predictor's (device, overlap, tta, channels_last, compile, decode), the same for every member.
    """

    def __init__(self, groups: Sequence[Sequence[str | Path]], keep_largest: bool | None = None,
                 qc_from_first: bool = False, **kwargs):
        self.qc_from_first = qc_from_first
        self.groups = [[Predictor(m, keep_largest=keep_largest, **kwargs) for m in group] for group in groups]
        self.members = [p for group in self.groups for p in group]
        first = self.members[0]
        for other in self.members[1:]:
            for what, a, b in (("input channels", first.plan.modalities, other.plan.modalities),
                               ("label convention", first.plan.label_convention, other.plan.label_convention)):
                if a != b:
                    raise MedsegError(f"--model: the members disagree on {what}: {first.source} has "
                                      f"{_show(a)}, {other.source} has {_show(b)}")
        self.plan = first.plan
        self.keep_largest = all(p.keep_largest for p in self.members)
        self.lesion_flair_z = first.lesion_flair_z
        self.decode = first.decode
        self.source, self.fingerprint, self.tta = first.source, first.fingerprint, first.tta  # for reports and SEGs

    def channels(self, files: Sequence[str], channels: Sequence[str] | None = None) -> list[Channel]:
        return self.members[0].channels(files, channels)

    def predict_case(self, files: Sequence[str], channels: Sequence[str] | None = None,
                     qc: bool = False) -> CasePrediction:
        """The mean of the members' probabilities on the input grid (a running sum: one member's maps at a time).

        qc: quality control (medseg.inference.qc) compares every member's QC passes (a bundled ensemble's: its
        first member's, whose QC thresholds were measured; members of another recipe differ systematically, which
        says nothing about the case), and the uncertainty map is the members' voxel-wise standard deviation on the
        input grid."""
        return self._predict(files, channels, keep=qc, qc=qc)[0]

    def predict_members(self, files: Sequence[str],
                        channels: Sequence[str] | None = None) -> tuple[CasePrediction, list[np.ndarray]]:
        """The mean prediction and every member's (R, X, Y, Z) probabilities, in member order (for QC)."""
        return self._predict(files, channels, keep=True)

    def predict_volumes(self, volumes: Sequence[Volume], channels: list[Channel], qc: bool = False) -> CasePrediction:
        """The mean of the members' probabilities of channels already read (DICOM series), as predict_case."""
        return self._predict(None, None, keep=qc, qc=qc, run=lambda p: p.predict_volumes(volumes, channels, qc))[0]

    def probabilities(self, image: MetaTensor, where: Path) -> tuple[np.ndarray, dict]:
        """The mean of the members' (R, X, Y, Z) probabilities of an image already read (medseg robustness)."""
        return self._mean(lambda p: p.probabilities(image, where)[0]), {}

    def _mean(self, maps_of: Callable[[Predictor], np.ndarray]) -> np.ndarray:
        """The mean over groups of each group's mean of maps_of(member) (a group: one model's folds), as a running
        sum: one member's (R, X, Y, Z) maps in memory at a time."""
        total = 0.0
        for group in self.groups:
            group_sum = 0.0
            for predictor in group:
                group_sum = group_sum + maps_of(predictor).astype(np.float64)
            total = total + group_sum / len(group)
        return (total / len(self.groups)).astype(np.float32)

    def _predict(self, files: Sequence[str] | None, channels: Sequence[str] | None, keep: bool,
                 qc: bool = False, run: Callable | None = None) -> tuple[CasePrediction, list[np.ndarray]]:
        members, seen, passes = [], [], []  # seen: the first member's prediction only

        def maps_of(predictor: Predictor) -> np.ndarray:
            prediction = run(predictor) if run else predictor.predict_case(files, channels, qc)
            if not seen:
                seen.append(prediction)
            first = seen[0]
            same_space = prediction.members and prediction.members[0].shape == first.members[0].shape
            if same_space and (not self.qc_from_first or prediction is first):
                passes.extend(prediction.members)  # QC passes in one network space (members of one plan)
            if keep:
                members.append(prediction.probabilities)
            return prediction.probabilities

        probabilities = self._mean(maps_of)
        first = seen[0]
        if not qc:
            return replace(first, probabilities=probabilities), members
        uncertainty = spread(members) if len(members) > 1 else first.uncertainty
        return replace(first, probabilities=probabilities, members=passes, uncertainty=uncertainty), members

    def labels(self, prediction: CasePrediction) -> np.ndarray:
        """The mask of the mean probabilities, as a single model's (Predictor.labels, on this ensemble's plan)."""
        return Predictor.labels(self, prediction)  # it reads plan, decode and the postprocessing


def spread(members: Sequence[np.ndarray]) -> np.ndarray:
    """Voxel-wise standard deviation of the members' probabilities (R, X, Y, Z): 0 where they all agree."""
    return np.std(np.stack(members), axis=0).astype(np.float32)


def _show(value: object) -> str:
    return "[" + ", ".join(value) + "]" if isinstance(value, tuple | list) else str(value)
