"""`medseg check-data`: training's load-time checks over a whole dataset, every bad case listed, and a fingerprint.

    medseg check-data --root BraTS2021_Training_Data --modalities t1 t1ce t2 flair [--json fingerprint.json]
    medseg check-data --datalist isbi.json --modalities em --label-convention em_membrane --voxel-size 50 4 4

Like nnU-Net's verify_dataset_integrity plus its dataset fingerprint: each case goes through the same loader as
training (channel count, shapes, label grid vs image grid, label values vs the convention), then the dataset-level
check (BraTS 2023 labels under a 2013/2021 convention). Unlike training it does not stop at the first bad case.
The fingerprint gives shapes, spacings, orientations, label voxel counts and per-channel intensity statistics in
the foreground (the convention's regions; a sample of voxels per case, as nnU-Net does).
"""

import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from medseg.data.checks import brats2023_error, label_values
from medseg.data.datasets import case_files, case_folders, datalist_entry, load_datalist
from medseg.data.transforms import LoadCased
from medseg.errors import MedsegError
from medseg.labels import get_convention
from medseg.utils.files import atomic_write

SAMPLES_PER_CASE = 10_000  # foreground voxels per case and channel for the intensity statistics (nnU-Net: 10,000)


def list_cases(root: str | None, datalist: str | None, modalities: list[str]) -> tuple[list[dict], list[str]]:
    """The dataset's case dicts and one error per case that cannot even be listed (missing or unreadable files)."""
    if (root is None) == (datalist is None):
        raise MedsegError("give exactly one of --root (BraTS folder) or --datalist (JSON)")
    cases, errors = [], []
    if root is not None:
        entries, make = case_folders(root), lambda folder: case_files(folder, modalities, with_label=True)
    else:
        spec = load_datalist(datalist)
        entries, make = spec["training"] + spec.get("validation", []), lambda e: datalist_entry(e, Path(datalist))
    for entry in entries:
        try:
            cases.append(make(entry))
        except MedsegError as e:
            errors.append(str(e))
    return cases, errors


@dataclass
class Fingerprint:
    """What nnU-Net's fingerprint extraction records, gathered case by case."""

    channels: list[str]
    instance_ids: bool  # EM id volumes: count 0 and "positive" rather than thousands of ids
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    spacings: list[tuple[float, ...]] = field(default_factory=list)
    orientations: Counter = field(default_factory=Counter)
    voxels: Counter = field(default_factory=Counter)  # label value -> voxels in the whole dataset
    cases_with: Counter = field(default_factory=Counter)  # label value -> cases holding it
    samples: list[list[np.ndarray]] = field(default_factory=list)  # per channel, per case

    def add(self, image: np.ndarray, label: np.ndarray, affine: np.ndarray, foreground: np.ndarray, seed: int) -> None:
        """image (C, X, Y, Z), label (X, Y, Z), foreground (X, Y, Z) bool."""
        self.shapes.append(tuple(image.shape[1:]))
        self.spacings.append(tuple(np.linalg.norm(affine[:3, :3], axis=0).round(4).tolist()))
        self.orientations["".join(nib.aff2axcodes(affine))] += 1
        counts = label_values(label)
        if self.instance_ids:
            counts = {"0": counts.get(0, 0), "positive": sum(n for v, n in counts.items() if v != 0)}
        self.voxels.update({str(v): n for v, n in counts.items()})
        self.cases_with.update(str(v) for v, n in counts.items() if n)
        picked = np.random.default_rng(seed).permutation(np.flatnonzero(foreground))[:SAMPLES_PER_CASE]
        self.samples.append([channel.ravel()[picked] for channel in image])  # (C,) arrays of sampled voxels

    def summary(self) -> dict:
        def spread(rows: list[tuple]) -> dict:
            a = np.array(rows, dtype=np.float64)  # (cases, 3)
            return {k: f(a, axis=0).round(4).tolist() for k, f in (("median", np.median), ("min", np.min),
                                                                     ("max", np.max))} if len(a) else {}

        intensity = {}
        for c, name in enumerate(self.channels):
            v = np.concatenate([s[c] for s in self.samples]) if self.samples else np.zeros(0)
            if v.size:
                p = np.percentile(v, [0.5, 50, 99.5])
                intensity[name] = {"mean": float(v.mean()), "sd": float(v.std()), "p0.5": float(p[0]),
                                   "median": float(p[1]), "p99.5": float(p[2]), "voxels": int(v.size)}
        return {"cases": len(self.shapes), "shape": spread(self.shapes), "spacing": spread(self.spacings),
                "orientation": dict(self.orientations), "label_voxels": dict(self.voxels),
                "label_cases": dict(self.cases_with), "intensity_in_foreground": intensity}


def check_data(root: str | None, datalist: str | None, modalities: list[str], label_convention: str,
               voxel_size: list[float] | None = None, json_out: str | None = None) -> int:
    """Check every case, print the fingerprint, then every problem as an `error:` line; 2 if there was any."""
    convention = get_convention(label_convention)
    cases, errors = list_cases(root, datalist, modalities)
    load = LoadCased(len(modalities), convention, voxel_size)
    fingerprint = Fingerprint(list(modalities), convention.labels is None)
    for i, case in enumerate(tqdm(cases, desc="check-data", unit="case", disable=None)):
        try:
            d = load(case)
        except MedsegError as e:
            errors.append(str(e))
            continue
        image, label = d["image"].numpy(), d["label"].numpy()[0]
        foreground = convention.to_regions(label[None]).any(axis=0)  # the voxels of any trained region
        fingerprint.add(image, label, d["image"].affine.numpy(), foreground, seed=i)
    where = datalist or root
    if error := brats2023_error(convention, {int(v) for v in fingerprint.voxels if v.isdigit()}, where):
        errors.append(str(error))
    report = {"source": str(where), "label_convention": label_convention, "modalities": list(modalities),
              **fingerprint.summary(), "bad_cases": len(errors), "errors": errors}
    show(report)
    if json_out:
        atomic_write(Path(json_out), lambda p: p.write_text(json.dumps(report, indent=1) + "\n"))
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 2 if errors else 0


def by_value(item: tuple[str, int]) -> tuple[int, int | str]:
    """Label values in numeric order ("2" before "10"), named groups ("positive") last."""
    return (0, int(item[0])) if item[0].isdigit() else (1, item[0])


def show(report: dict) -> None:
    """The fingerprint as a few aligned lines."""
    print(f"{report['source']}: {report['cases']} readable cases, {report['bad_cases']} problems; "
          f"convention {report['label_convention']}; channels {', '.join(report['modalities'])}")
    for key in ("shape", "spacing"):
        if report[key]:
            print(f"  {key:<12} " + "  ".join(f"{k} {v}" for k, v in report[key].items()))
    print(f"  {'orientation':<12} " + ", ".join(f"{k} ×{n}" for k, n in report["orientation"].items()))
    print(f"  {'labels':<12} " + ", ".join(f"{v}: {n} voxels in {report['label_cases'].get(v, 0)} cases"
                                            for v, n in sorted(report["label_voxels"].items(), key=by_value)))
    for name, s in report["intensity_in_foreground"].items():
        print(f"  {name:<12} mean {s['mean']:.4g} sd {s['sd']:.4g} p0.5 {s['p0.5']:.4g} median {s['median']:.4g} "
              f"p99.5 {s['p99.5']:.4g} ({s['voxels']} foreground voxels)")
