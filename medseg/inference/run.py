"""`medseg predict`: one case (files or a case folder) or a folder of cases, through one loaded Predictor.

Without `--model` the bundled model for the input type is used (`medseg models`). In folder mode every case found
(BraTS case folders, or loose files grouped by case name / nnU-Net `_0000` suffix) is written as `<case>.nii.gz` in
the output folder; existing outputs are skipped unless `--overwrite`, so a killed run continues where it stopped, and
a bad case prints its `error:` line while the others still run.
"""

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medseg.data.io import HDF5, TIFF, is_image, stem, suffix, write_mask
from medseg.em.decode import DEFAULT_DECODE, DecodeParams, boundary_map
from medseg.errors import MedsegError
from medseg.evaluation.metrics import prediction_regions
from medseg.inference.channels import case_name, group_cases
from medseg.inference.chunked import predict_h5
from medseg.inference.outputs import write_probabilities
from medseg.inference.predictor import CasePrediction, Predictor
from medseg.inference.preview import instance_stats, write_instance_preview, write_preview, write_stats
from medseg.models import default_model
from medseg.utils.files import write_json


@dataclass
class Options:
    """What to write besides the mask, and how to read the inputs."""

    overwrite: bool = False
    channels: list[str] | None = None
    probabilities: str | None = None
    preview: str | None = None
    stats: str | None = None
    chunk: int | None = None  # EM HDF5: predict and decode this many sections at a time (medseg.inference.chunked)


def predict(inputs: list[str], model: str | None = None, output: str | None = None, *, device: str = "auto",
            overlap: float = 0.5, tta: bool = False, channels_last: bool | None = None, compile: bool = False,
            options: Options | None = None, decode: DecodeParams = DEFAULT_DECODE,
            keep_largest: bool | None = None) -> int:
    """Segment one case or a folder of cases; returns the exit code (2 when any case failed)."""
    options = options or Options()
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.exists():
            raise MedsegError(f"{p}: no such file or directory")
    if any(p.is_dir() for p in paths) and len(paths) > 1:
        raise MedsegError("give one case folder, one folder of cases, or image files only")
    model = model or default_model([str(p) for p in paths if p.is_file()] or _first_image(paths[0]))
    predictor = Predictor(model, device=device, overlap=overlap, tta=tta, channels_last=channels_last,
                          compile=compile, decode=decode, keep_largest=keep_largest)
    if options.chunk:
        return predict_large(predictor, paths, output, options)
    if paths[0].is_dir():
        cases = group_cases(paths[0], predictor.plan.modalities)
        if not cases:
            raise MedsegError(f"{paths[0]}: no image files or case folders in this folder")
        if len(cases) > 1 or any(Path(f).parent != paths[0] for files in cases.values() for f in files):
            return predict_folder(predictor, cases, Path(output) if output else Path.cwd() / f"{paths[0].name}_pred",
                                  options)
        files, case = next(iter(cases.values())), paths[0].resolve().name
    else:
        files, case = [str(p) for p in paths], None
    predict_one(predictor, files, case, output, options)
    return 0


def predict_large(predictor: Predictor, paths: list[Path], output: str | None, options: Options) -> int:
    """One HDF5 volume, slab by slab, into an HDF5 id volume (medseg.inference.chunked)."""
    if len(paths) != 1 or suffix(paths[0]) not in HDF5:
        raise MedsegError("--chunk takes one HDF5 volume (.h5)")
    out = output_path(stem(paths[0]), output, ".h5")
    if suffix(out) not in HDF5:
        raise MedsegError(f"{out}: --chunk writes HDF5 (.h5)")
    _check_outputs(out, [str(paths[0])], options.overwrite)
    start = time.perf_counter()
    count = predict_h5(predictor, paths[0], out, options.chunk)
    print(f"wrote {out} ({count} neuron ids; {time.perf_counter() - start:.1f} s)")
    return 0


def _first_image(folder: Path) -> list[str]:
    """The first image under a folder, to choose the default model by its type."""
    return [str(p) for p in sorted(folder.rglob("*")) if p.is_file() and is_image(p)][:1]


def mask_suffix(files: list[str]) -> str:
    """EM TIFF stacks get TIFF masks, HDF5 stacks HDF5; everything else NIfTI."""
    ext = suffix(files[0]) if files else ""
    return ".tif" if ext in TIFF else ".h5" if ext in HDF5 else ".nii.gz"


def output_path(case: str, output: str | None, ext: str) -> Path:
    """The mask's path: `--output` as given when it names an image file; otherwise `--output` is a folder (made if
    needed, as nnU-Net's -o) holding <case><ext>; without `--output`, ./<case>_pred<ext>."""
    if output is None:
        return Path.cwd() / f"{case}_pred{ext}"
    out = Path(output)
    if out.is_dir() or not is_image(out):
        return out / f"{case}{ext}"
    return out


def predict_one(predictor: Predictor, files: list[str], case: str | None, output: str | None,
                options: Options) -> Path:
    start = time.perf_counter()
    case = case or _case_name(files[0], predictor)
    out = output_path(case, output, mask_suffix(files))
    _check_outputs(out, files, options.overwrite)
    prediction = predictor.predict_case(files, options.channels)
    labels = write_outputs(predictor, prediction, out, options, None)
    mapping = ", ".join(f"{m}={Path(c.path).name}" + (f"[{c.index}]" if c.index is not None else "")
                        for m, c in zip(predictor.plan.modalities, prediction.channels, strict=True))
    if predictor.plan.convention.instances:
        found = f"{instance_stats(labels)['neurons']} neuron ids"
    else:
        regions = prediction_regions(labels, predictor.plan.convention)  # what the written mask holds
        found = "voxels " + ", ".join(f"{r} {int(m.sum())}" for r, m in regions.items())
    print(f"channels: {mapping}")
    print(f"wrote {out} ({case}: {found}; {time.perf_counter() - start:.1f} s)")
    return out


def write_outputs(predictor: Predictor, prediction: CasePrediction, out: Path, options: Options,
                  case: str | None) -> np.ndarray:
    """The mask, then what was asked besides it; in folder mode (`case` given) the option paths are folders.
    Returns the label map (EM neuron models: the ids)."""
    labels = predictor.labels(prediction)
    reference = prediction.reference
    write_mask(labels, reference, out)
    at = lambda option, ext: Path(option) / f"{case}{ext}" if case else Path(option)  # noqa: E731
    if options.probabilities:
        write_probabilities(prediction.probabilities, reference, at(options.probabilities, ".nii.gz"))
    zooms = np.linalg.norm(reference.affine[:3, :3], axis=0)  # voxel size per axis (mm; nm for EM)
    convention = predictor.plan.label_convention
    if predictor.plan.convention.instances:
        if options.preview:
            boundary = boundary_map(prediction.probabilities, predictor.plan.convention.targets)
            write_instance_preview(prediction.image[0], boundary, labels,
                                   at(options.preview, "_preview.png"))
        if options.stats:
            write_json(at(options.stats, "_stats.json"), instance_stats(labels))
        return labels
    if options.preview:
        write_preview(np.moveaxis(prediction.image, 0, -1), labels, convention, at(options.preview, "_preview.png"),
                      zooms, reference.affine)
    if options.stats:
        write_stats(labels, convention, zooms, at(options.stats, "_stats.json"))
    return labels


def _case_name(path: str, predictor: Predictor) -> str:
    return case_name([path], predictor.plan.modalities) if len(predictor.plan.modalities) > 1 else stem(path)


def _check_outputs(out: Path, files: list[str], overwrite: bool) -> None:
    if any(out.resolve() == Path(f).resolve() for f in files):
        raise MedsegError(f"{out}: refusing to overwrite an input with the mask")
    if out.exists() and not overwrite:
        raise MedsegError(f"{out}: already exists (use --overwrite to replace it)")


def predict_folder(predictor: Predictor, cases: dict[str, list[str]], out_dir: Path, options: Options) -> int:
    """Every case into `out_dir/<case>.nii.gz`; finished cases are skipped, failures reported at the end."""
    out_dir.mkdir(parents=True, exist_ok=True)
    failed, skipped, written = [], [], []
    start = time.perf_counter()
    for case, files in tqdm(cases.items(), desc="cases", unit="case"):
        out = out_dir / f"{case}{mask_suffix(files)}"
        if out.exists() and not options.overwrite:
            skipped.append(case)
            continue
        try:
            if not files:
                raise MedsegError(f"{case}: no image files in this case folder")
            prediction = predictor.predict_case(files, options.channels)
            write_outputs(predictor, prediction, out, options, case)
            written.append(case)
        except MedsegError as e:
            tqdm.write(f"error: {e}", file=sys.stderr)
            failed.append(case)
    print(f"{len(cases)} cases: {len(written)} written, {len(skipped)} skipped (already done), {len(failed)} failed "
          f"in {time.perf_counter() - start:.1f} s; masks in {out_dir}")
    if failed:
        print(f"error: {len(failed)} case(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 2
    return 0
