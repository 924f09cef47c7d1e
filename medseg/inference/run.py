"""`medseg predict`: one case (files or a case folder) or a folder of cases, through one loaded Predictor.

Without `--model` the bundled model for the input type is used (`medseg models`). A folder is one case unless it
holds case folders or several complete groups of channel files (medseg.inference.channels.find_cases); files of a
case that name no modality the model takes are left out with one note. DICOM inputs (series folders, a zip, a
DICOMDIR) are one case (medseg.inference.dicom) and can be written back as DICOM-SEG (`--output seg.dcm`). In folder
mode every case found is written as `<case>.nii.gz` in the output folder; existing outputs are skipped unless
`--overwrite`, so a killed run continues where it stopped, and a bad case prints its `error:` line while the others
still run. An `--output` that names an image file (`.nii.gz`, `.dcm`, …) is always that one file, never a folder.
"""

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medseg.data.io import HDF5, TIFF, is_image, stem, suffix, write_mask
from medseg.em.decode import DecodeParams, boundary_map
from medseg.errors import MedsegError
from medseg.evaluation.metrics import prediction_regions
from medseg.inference import dicom
from medseg.inference.channels import Channel, case_name, find_cases
from medseg.inference.chunked import predict_h5
from medseg.inference.dicom_seg import write_seg
from medseg.inference.ensemble import Ensemble, load_predictor
from medseg.inference.outputs import write_probabilities
from medseg.inference.predictor import CasePrediction, Predictor, channel_count
from medseg.inference.preview import instance_stats, region_stats, write_instance_preview, write_preview
from medseg.inference.qc import assess
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
    report: str | None = None  # HTML page per case (medseg.report.html); a folder of cases adds index.html
    uncertainty: str | None = None  # voxel-wise SD of the QC members, NIfTI on the input's grid
    chunk: int | None = None  # EM HDF5: predict and decode this many sections at a time (medseg.inference.chunked)
    output_type: str | None = None  # "nifti" or "dicom-seg"; None: from --output's suffix (.dcm: DICOM-SEG)



    @property
    def qc(self) -> bool:
        """Quality control is computed whenever its results are written somewhere."""
        return bool(self.stats or self.report or self.uncertainty)


# names that are always a file as --output: never made into a folder
FILE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".tif", ".tiff", ".h5", ".hdf5", ".hdf", ".dcm",
                 ".mgz", ".mgh", ".img", ".hdr")


def predict(inputs: list[str], model: str | None = None, output: str | None = None, *, device: str = "auto",
            overlap: float = 0.5, tta: bool = False, channels_last: bool | None = None, compile: bool = False,
            options: Options | None = None, decode: DecodeParams | dict | None = None,
            keep_largest: bool | None = None, voxel_size: list[float] | None = None,
            lesion_flair_z: float | str | None = None) -> int:
    """Segment one case or a folder of cases; returns the exit code (2 when any case failed)."""
    options = options or Options()
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.exists():
            raise MedsegError(f"{p}: no such file or directory")
    if options.output_type == "dicom-seg" and output and suffix(output) in FILE_SUFFIXES and suffix(output) != ".dcm":
        raise MedsegError(f"{output}: --output-type dicom-seg writes a .dcm file")
    is_dicom = dicom.is_dicom(paths)
    if options.output_type == "dicom-seg" and not is_dicom:
        raise MedsegError(f"--output-type dicom-seg: a DICOM-SEG references the DICOM images it segments, and "
                          f"{paths[0]} is not DICOM; give the DICOM series as input, or write NIfTI masks")
    if not is_dicom and any(p.is_dir() for p in paths) and len(paths) > 1:
        raise MedsegError("give one case folder, one folder of cases, or image files only")
    model = model or default_model([] if is_dicom else
                                   [str(p) for p in paths if p.is_file()] or _first_image(paths[0]))
    predictor = load_predictor(model, device=device, overlap=overlap, tta=tta, channels_last=channels_last,
                               compile=compile, decode=decode, keep_largest=keep_largest, voxel_size=voxel_size,
                               lesion_flair_z=lesion_flair_z)
    if is_dicom:
        predict_dicom(predictor, paths, output, options)
        return 0
    if options.chunk:
        if isinstance(predictor, Ensemble):
            raise MedsegError("--chunk takes a single model, not an ensemble")
        return predict_large(predictor, paths, output, options)
    if paths[0].is_dir():
        cases, ignored, single = find_cases(paths[0], predictor.plan.modalities, options.channels is None,
                                            channel_count)
        if ignored:
            listed = ", ".join(Path(f).name for f in ignored[:12]) + (f" and {len(ignored) - 12} more"
                                                                      if len(ignored) > 12 else "")
            print(f"note: ignored {len(ignored)} file(s) that are no input of this model "
                  f"({', '.join(predictor.plan.modalities)}): {listed}", file=sys.stderr)
        if not cases:
            raise MedsegError(f"{paths[0]}: no image files or case folders in this folder")
        if not single:
            if output and suffix(output) in FILE_SUFFIXES:
                raise MedsegError(f"--output {output} names one file, but {paths[0]} holds {len(cases)} cases "
                                  f"({', '.join(list(cases)[:4])}{', …' if len(cases) > 4 else ''}); give an "
                                  "output folder")
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
    """The mask's path: `--output` as given when it names an image file (FILE_SUFFIXES); otherwise `--output` is a
    folder (made if needed, as nnU-Net's -o) holding <case><ext>; without `--output`, ./<case>_pred<ext>."""
    if output is None:
        return Path.cwd() / f"{case}_pred{ext}"
    out = Path(output)
    if suffix(out) in FILE_SUFFIXES:
        if out.is_dir():
            raise MedsegError(f"{out}: is a folder, but its name is a mask file's; remove it or name another file")
        return out
    return out / f"{case}{ext}"


def predict_one(predictor: Predictor, files: list[str], case: str | None, output: str | None,
                options: Options) -> Path:
    start = time.perf_counter()
    case = case or _case_name(files[0], predictor)
    out = output_path(case, output, mask_suffix(files))
    if suffix(out) == ".dcm":
        raise MedsegError(f"{out}: a DICOM-SEG references the DICOM images it segments, and {Path(files[0]).name} "
                          "is not DICOM; give the DICOM series as input, or write the mask as .nii.gz")
    _check_outputs(out, files, options.overwrite)
    prediction = predictor.predict_case(files, options.channels, options.qc)
    labels, stats = write_outputs(predictor, prediction, out, options, None)
    print(f"channels: {channel_line(predictor, prediction)}")
    print(f"wrote {out} ({case}: {found(predictor, labels)}; {time.perf_counter() - start:.1f} s)")
    if stats and stats["qc"]:
        print(qc_line(stats["qc"]))
    return out


def predict_dicom(predictor: Predictor, paths: list[Path], output: str | None, options: Options) -> Path:
    """One DICOM case (medseg.inference.dicom) into a NIfTI mask on the reference series' grid, or a DICOM-SEG
    referencing that series (`--output x.dcm` or `--output-type dicom-seg`)."""
    start = time.perf_counter()
    named = paths[0].resolve().parent if paths[0].name.upper() == "DICOMDIR" else paths[0].resolve()
    case = named.name.removesuffix(named.suffix) if named.is_file() else named.name
    seg = options.output_type == "dicom-seg" or (output is not None and suffix(output) == ".dcm")
    out = output_path(case, output, ".dcm" if seg else ".nii.gz")
    _check_outputs(out, [str(p) for p in paths], options.overwrite)
    read = dicom.read_case(paths, predictor.plan.modalities, options.channels)
    print(f"channels: {read.matched}")
    background = float((read.volumes[0].array == read.volumes[0].array.min()).mean())
    if background < 0.2:  # skull-stripped scans are mostly exact background; scanner images have noise there
        print(f"note: {read.series[0].name} does not look skull-stripped (only {background:.0%} of its voxels are "
              "background); the model expects skull-stripped, co-registered images, and medseg does neither "
              "(docs/dicom.md)", file=sys.stderr)
    channels = [Channel(s.name) for s in read.series]
    prediction = predictor.predict_volumes(read.volumes, channels, options.qc)
    if seg:
        labels, stats = write_outputs(predictor, prediction, None, options, None)
        regions = write_seg(labels, predictor.plan.convention, read.series[0].headers, predictor.source.stem, out)
        what = f"DICOM-SEG of {read.series[0].name}, segments {', '.join(regions)}"
    else:
        labels, stats = write_outputs(predictor, prediction, out, options, None)
        what = found(predictor, labels)
    print(f"wrote {out} ({case}: {what}; {time.perf_counter() - start:.1f} s)")
    if stats and stats["qc"]:
        print(qc_line(stats["qc"]))
    return out


def channel_line(predictor: Predictor, prediction: CasePrediction) -> str:
    """Which file (and 4D channel) fed each of the model's modalities."""
    return ", ".join(f"{m}={Path(c.path).name}" + (f"[{c.index}]" if c.index is not None else "")
                     for m, c in zip(predictor.plan.modalities, prediction.channels, strict=True))


def found(predictor: Predictor, labels: np.ndarray) -> str:
    """What the written mask holds: voxels per region, or the number of neuron ids."""
    if predictor.plan.convention.instances:
        return f"{instance_stats(labels)['neurons']} neuron ids"
    regions = prediction_regions(labels, predictor.plan.convention)
    return "voxels " + ", ".join(f"{r} {int(m.sum())}" for r, m in regions.items())


def write_outputs(predictor: Predictor, prediction: CasePrediction, out: Path | None, options: Options,
                  case: str | None) -> tuple[np.ndarray, dict | None]:
    """The mask (unless `out` is None: a DICOM-SEG is written apart), then what was asked besides it; in folder
    mode (`case` given) the option paths are folders. Returns the label map (EM neuron models: the ids) and the
    case's statistics with its "qc" (None for EM ids)."""
    labels = predictor.labels(prediction)
    reference = prediction.reference
    if out is not None:
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
        if options.report:
            raise MedsegError("--report: EM neuron-id models have no report yet (use --preview)")
        return labels, None
    if options.preview:
        write_preview(np.moveaxis(prediction.image, 0, -1), labels, convention, at(options.preview, "_preview.png"),
                      zooms, reference.affine)
    qc = quality(predictor, prediction, labels) if options.qc else None
    if options.uncertainty and prediction.uncertainty is not None:
        write_probabilities(prediction.uncertainty, reference, at(options.uncertainty, ".nii.gz"))
    stats = {**region_stats(labels, convention, zooms), "qc": qc}
    if options.stats:
        write_json(at(options.stats, "_stats.json"), stats)
    if options.report:
        from medseg.report.html import write_case_report  # lazily: the report draws on inference (preview)

        write_case_report(predictor, prediction, labels, stats, at(options.report, ".html"),
                          "index.html" if case else None)
    return labels, stats


def qc_line(qc: dict) -> str:
    """The console's one line of quality control."""
    flags = ", ".join(qc["flags"]) if qc["flags"] else "none"
    return f"qc: score {qc['score']:.3f} (higher = less trustworthy), flags: {flags}"


def quality(predictor: Predictor, prediction: CasePrediction, labels: np.ndarray) -> dict | None:
    """`"qc": {"score", "flags", "details"}` of a prediction made with qc (medseg.inference.qc)."""
    if prediction.members is None:
        return None
    return assess(prediction.network_image, prediction.members, prediction.spacing, predictor.plan.regions,
                  predictor.plan.modalities, predictor.fingerprint, int(np.count_nonzero(labels)),
                  brain=predictor.plan.voxel_size is None)  # EM stacks carry a voxel size and no brain


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
    summaries: dict[str, dict | None] = {}  # case -> stats, for the report's index (None: done in an earlier run)
    start = time.perf_counter()
    for case, files in tqdm(cases.items(), desc="cases", unit="case"):
        out = out_dir / f"{case}{mask_suffix(files)}"
        if out.exists() and not options.overwrite:
            skipped.append(case)
            if options.report and (Path(options.report) / f"{case}.html").exists():
                summaries[case] = None
            continue
        try:
            if not files:
                raise MedsegError(f"{case}: no image files in this case folder")
            prediction = predictor.predict_case(files, options.channels, options.qc)
            _, summaries[case] = write_outputs(predictor, prediction, out, options, case)
            tqdm.write(f"{case}: channels {channel_line(predictor, prediction)}")
            if summaries[case] and summaries[case]["qc"] and summaries[case]["qc"]["flags"]:
                tqdm.write(f"{case}: {qc_line(summaries[case]['qc'])}")
            written.append(case)
        except MedsegError as e:
            tqdm.write(f"error: {e}", file=sys.stderr)
            failed.append(case)
    if options.report and summaries:
        from medseg.report.html import write_index

        print(f"wrote {write_index(Path(options.report), summaries)}")
    print(f"{len(cases)} cases: {len(written)} written, {len(skipped)} skipped (already done), {len(failed)} failed "
          f"in {time.perf_counter() - start:.1f} s; masks in {out_dir}")
    if failed:
        print(f"error: {len(failed)} case(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 2
    return 0
