"""`medseg` command: dispatches to train, search, predict, evaluate, cv-summary, find-best, models, demo, bench,
check-data and doctor.

Bad input → one `error: …` line on stderr and exit code 2 (`--debug` shows the traceback)."""

import argparse
import os
import sys

from medseg import __version__
from medseg.em.params import DEFAULT_DECODE
from medseg.errors import MedsegError
from medseg.labels import BRATS_MODALITIES, CONVENTIONS, DEFAULT_CONVENTION


def flair_z(text: str) -> float | str:
    """--lesion-flair-z: a number of brain SDs, or `off`."""
    if text == "off":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'off', got {text!r}") from None


def add_postprocessing(p: argparse.ArgumentParser) -> None:
    """The label-map postprocessing flags; their defaults are what the model's plan says."""
    p.add_argument("--keep-largest", action=argparse.BooleanOptionalAction, default=None,
                   help="keep only the largest connected lesion of the mask (default: as the model says; the bundled "
                        "brats model: on)")
    p.add_argument("--lesion-flair-z", type=flair_z, metavar="Z|off",
                   help="drop lesions whose FLAIR 75th percentile is below Z brain SDs (not FLAIR-hyperintense: "
                        "venous sinuses, cortex), before --keep-largest (default: as the model says; the bundled "
                        "brats model: 1.0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medseg", description="3D segmentation of brain MRI and EM volumes.")
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="train a network (LightningCLI: --config, dotted overrides, --print_config)",
                   add_help=False)
    sub.add_parser("search", help="search a CAKES configuration (train's options + --search.*, --output FILE.json)",
                   add_help=False)
    p = sub.add_parser("predict", help="segment a scan, a case folder or a folder of cases")
    p.add_argument("inputs", nargs="+", help="a case folder, a folder of cases, a 4D NIfTI, one file per channel, or "
                                             "DICOM: series folders, a case folder of series, a .zip or a DICOMDIR")
    p.add_argument("--model", help="a bundled model name (`medseg models`), a checkpoint (best.ckpt), a training run "
                                   "folder, or a cross-validation root (its folds are averaged); a,b averages several "
                                   "(medseg.inference.ensemble); default: the bundled brats model, em-membrane for "
                                   "TIFF/HDF5")
    p.add_argument("--output", help="mask path (default: ./<case>_pred.nii.gz; .tif for EM TIFF), or a folder; "
                                    "for a folder of cases, the output folder (default: ./<folder>_pred)")
    p.add_argument("--channels", type=lambda s: [c.strip() for c in s.split(",")],
                   help="modality of each given file (or of a 4D file's channels) in order, e.g. flair,t1,t1ce,t2; "
                        "default: identified by file name (_flair, _t1ce, _0000, ...)")
    p.add_argument("--output-type", choices=["nifti", "dicom-seg"], help="dicom-seg: a DICOM Segmentation "
                   "referencing the input series (DICOM inputs only; also chosen by --output NAME.dcm); default: "
                   "NIfTI (docs/dicom.md)")
    p.add_argument("--tta", action="store_true", help="average the 8 mirrorings (8x the time)")
    add_postprocessing(p)
    p.add_argument("--save-probabilities", metavar="PATH",
                   help="region probabilities as a 4D float32 NIfTI (a folder for a folder of cases)")
    p.add_argument("--preview", metavar="PNG", help="three orthogonal slices through the largest lesion with the mask "
                                                    "overlaid (a folder for a folder of cases)")
    p.add_argument("--stats", metavar="JSON", help="each region's voxel count and volume in mL (a folder for a folder "
                                                   "of cases)")
    p.add_argument("--report", metavar="HTML", help="a self-contained offline HTML page: viewer, volumes, QC flags, "
                                                    "model card (a folder with index.html for a folder of cases)")
    p.add_argument("--uncertainty", metavar="PATH", help="voxel-wise SD of the QC members (the 8 mirrorings with "
                                                         "--tta, else plain and left-right mirrored) per region, 4D "
                                                         "NIfTI (a folder for a folder of cases)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (folders: redo finished cases)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap (default: 0.5)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="network in channels_last_3d (default: on for CPU, where it is faster)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (warm-up time is reported)")
    em = p.add_argument_group("EM neuron models (em_boundary / em_affinity): decoding to ids, medseg.em.decode")
    em.add_argument("--min-distance", type=int, help="seeds closer than this many voxels are one (default: the "
                    f"model's validated setting, else {DEFAULT_DECODE.min_distance}; larger merges more)")
    em.add_argument("--min-size", type=int, help="segments below this many voxels join a neighbour (default: the "
                    f"model's, else {DEFAULT_DECODE.min_size})")
    em.add_argument("--decode-method", choices=["boundary", "affinity", "waterz"], help="agglomeration of the "
                    f"watershed fragments (default: the model's validated choice, else {DEFAULT_DECODE.method})")
    em.add_argument("--voxel-size", nargs=3, type=float, metavar=("Z", "Y", "X"), help="the input's voxel size in "
                    "nm, when it differs from the model's: resampled to the model's and the ids back (default: an "
                    "HDF5 `resolution` attribute, else the model's)")
    em.add_argument("--chunk", type=int, metavar="SECTIONS", help="an HDF5 volume larger than memory: predict and "
                    "decode this many z sections at a time into an HDF5 id volume (ids joined across slabs)")
    em.add_argument("--merge-below", type=float, help="merge neighbours whose contact has a mean boundary "
                    "probability (or one minus mean affinity) below this (default: the model's, else "
                    f"{DEFAULT_DECODE.merge_below}; 0 turns merging off)")
    sub.add_parser("models", help="list the bundled models: inputs, outputs, measured Dice, licence")
    e = sub.add_parser("evaluate", help="Dice, HD95, surface Dice and volumes (EM: VOI, adapted Rand, membrane F1)")
    e.add_argument("pred", help="predicted label map, or a folder of them (<case>_pred.nii.gz, <case>.nii.gz, ...)")
    e.add_argument("gt", help="ground truth file or folder (<case>_seg.nii.gz files or BraTS case folders)")
    e.add_argument("--label-convention", default=DEFAULT_CONVENTION,
                   help=f"label convention of both: {', '.join(CONVENTIONS)} (default: {DEFAULT_CONVENTION})")
    e.add_argument("--tolerance", type=float, default=1.0, help="surface Dice tolerance in mm (default: 1)")
    e.add_argument("--instances", action="store_true", help="EM neuron-id volumes: VOI split/merge, adapted Rand")
    e.add_argument("--csv", help="write a row per case and region to this CSV file")
    e.add_argument("--report", metavar="HTML", help="an offline HTML page: sortable tables worst case first, box "
                                                    "plots of Dice and HD95 per region")
    e.add_argument("--case-pages", metavar="FOLDER", help="where `medseg predict --report FOLDER` wrote the case "
                                                          "pages the report links to (default: the report's folder)")
    e.add_argument("--json", help="write per-case scores and their summary to this JSON file")
    s = sub.add_parser("cv-summary", help="out-of-fold Dice, HD95 and NSD of a cross-validation (train --cv.folds)")
    s.add_argument("root", help="the cross-validation's root (--trainer.default_root_dir, holding splits.json)")
    s.add_argument("--tolerance", type=float, default=1.0, help="surface Dice tolerance in mm (default: 1)")
    s.add_argument("--json", help="per-case scores and summary (default: <root>/cv_summary.json)")
    s.add_argument("--csv", help="a row per case and region (default: <root>/cv_summary.csv)")
    f = sub.add_parser("find-best", help="choose among cross-validations, their pairwise ensembles and keep-largest "
                                         "postprocessing by out-of-fold mean Dice; print the predict command")
    f.add_argument("roots", nargs="+", help="cross-validation roots of the same cases (one per configuration)")
    f.add_argument("--tolerance", type=float, default=1.0, help="surface Dice tolerance in mm (default: 1)")
    f.add_argument("--output", help="default: inference.json in the roots' common folder")
    r = sub.add_parser("robustness", help="Dice and far false positives of a model on labelled cases perturbed as "
                                          "other sites differ (intensity, gamma, bias, noise, resolution, FOV, ...)")
    r.add_argument("--model", default="brats", help="bundled model name or checkpoint (default: brats)")
    r.add_argument("--datalist", required=True, help="MSD-style JSON; images in the model's channel order + label")
    r.add_argument("--cases", nargs="*", default=[], help="case names in the datalist (default: all)")
    r.add_argument("--heldout", nargs="*", default=[], help="which of the cases the model never saw (reported)")
    r.add_argument("--perturbations", nargs="*", default=[], help="names (default: all; see docs/robustness.md)")
    r.add_argument("--label-convention", default="brats2013", help="the labels' convention (default: brats2013)")
    r.add_argument("--seed", type=int, default=0, help="seed of the random perturbations (default: 0)")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] | mps")
    r.add_argument("--output", help="write the scores as JSON here")
    r.add_argument("--compare", help="an earlier run's JSON (another model): print both side by side")
    add_postprocessing(r)
    d = sub.add_parser("demo", help="train a small model on the bundled sample and segment a held-out case")
    d.add_argument("--output", default="medseg-demo", help="run folder (default: ./medseg-demo)")
    d.add_argument("--minutes", type=float, default=3.0, help="training time (default: 3)")
    b = sub.add_parser("bench", help="parameters, FLOPs, prediction time and memory of every net × block")
    b.add_argument("--config", help="recipe (a file, or a shipped name: brats, em_isbi) whose widths and patch "
                                     "size are used (default: brats)")
    b.add_argument("--archs", nargs="+", help="default: every registered net")
    b.add_argument("--blocks", nargs="+", help="default: every registered block")
    b.add_argument("--shape", nargs=3, type=int, metavar=("X", "Y", "Z"),
                   help="volume predicted by sliding window (default: a 240×240×155 1 mm BraTS scan resampled to the "
                        "recipe's data.spacing, 120 120 78 for brats.yaml)")
    b.add_argument("--repeats", type=int, default=5,
                   help="timed rounds after one warm-up, every net once per round; the median is reported")
    b.add_argument("--overlap", type=float, default=0.25, help="sliding-window overlap (default: 0.25, as in training)")
    b.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    b.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="bfloat16: autocast")
    b.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                   help="model and input in torch.channels_last_3d (default: the faster layout for the device)")
    b.add_argument("--compile", action="store_true", help="torch.compile the nets (warm-up reported, not timed)")
    b.add_argument("--widths", default="recipe", choices=["recipe", "gpu"],
                   help="the recipe's channels, or the GPU recipe's 32,64,128,256,320")
    b.add_argument("--threads", type=int, help="torch threads (default: torch's current setting)")
    b.add_argument("--layer-size", type=int, default=64, help="input size of the one-layer table (0: skip it)")
    b.add_argument("--json", help="also write the records to this JSON file")
    b.add_argument("--block-kwargs", action="append", default=[], metavar="BLOCK=YAML",
                   help="build BLOCK with these settings instead of its defaults, e.g. pmscn='{inner_act: true}' "
                        "(repeatable)")
    sub.add_parser("doctor", help="versions, GPUs, shared memory, and warnings about what would break training")
    c = sub.add_parser("check-data", help="run training's data checks over a whole dataset, list every bad case, "
                                          "print a fingerprint (shapes, spacings, labels, intensities)")
    c.add_argument("--root", help="BraTS-layout folder <root>/<case>/<case>_<modality>.nii.gz + <case>_seg.nii.gz")
    c.add_argument("--datalist", help="MSD-style JSON with training (and validation) lists")
    c.add_argument("--modalities", nargs="+", default=BRATS_MODALITIES,
                   help=f"channel names, as --data.modalities (default: {' '.join(BRATS_MODALITIES)})")
    c.add_argument("--label-convention", default=DEFAULT_CONVENTION,
                   help=f"as --data.label_convention: {', '.join(CONVENTIONS)} (default: {DEFAULT_CONVENTION})")
    c.add_argument("--voxel-size", nargs=3, type=float, metavar=("Z", "Y", "X"), help="EM voxel size in nm")
    c.add_argument("--json", help="also write the fingerprint and the problems to this JSON file")
    return parser


def block_settings(items: list[str]) -> dict[str, dict]:
    """`BLOCK=YAML` items (`--block-kwargs`) as {block: kwargs}."""
    import yaml

    settings = {}
    for item in items:
        block, sep, text = item.partition("=")
        try:
            kwargs = yaml.safe_load(text) if sep else None
        except yaml.YAMLError:
            kwargs = None
        if not isinstance(kwargs, dict):
            raise MedsegError(f"--block-kwargs {item!r}: expected BLOCK={{key: value, …}}, e.g. pmscn='{{m: 1}}'")
        settings[block] = kwargs
    return settings


USER_ERRORS = (MedsegError, FileNotFoundError, NotADirectoryError, PermissionError)


def user_error(e: BaseException | None) -> BaseException | None:
    """The bad-input error behind `e`, also when MONAI or a DataLoader worker wrapped it in a RuntimeError."""
    while e is not None and not isinstance(e, USER_ERRORS):
        e = e.__cause__ or e.__context__
    return e


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if argv and argv[0] in ("train", "search"):  # everything after the command belongs to LightningCLI
        command, rest = argv[0], argv[1:]
    else:
        args = build_parser().parse_args(argv)
        command = args.command
    try:
        if command == "train":
            from medseg.training.cli import train

            return train(rest)
        if command == "search":
            from medseg.search.run import search

            return search(rest)
        if command == "predict":
            from medseg.inference.run import Options, predict

            options = Options(overwrite=args.overwrite, channels=args.channels, probabilities=args.save_probabilities,
                              preview=args.preview, stats=args.stats, chunk=args.chunk,
                              output_type=args.output_type, report=args.report, uncertainty=args.uncertainty)
            given = {"min_distance": args.min_distance, "min_size": args.min_size, "method": args.decode_method,
                     "merge_below": args.merge_below}
            decode = {k: v for k, v in given.items() if v is not None}  # overrides of the model's stored decoding
            if args.merge_below == 0:
                decode["merge_below"] = None  # 0: no merging
            return predict(args.inputs, args.model, args.output, device=args.device, overlap=args.overlap,
                           tta=args.tta, channels_last=args.channels_last, compile=args.compile, options=options,
                           decode=decode, keep_largest=args.keep_largest, voxel_size=args.voxel_size,
                           lesion_flair_z=args.lesion_flair_z)
        if command == "models":
            from medseg.models.listing import list_models

            return list_models()
        if command == "evaluate":
            from medseg.evaluation.evaluate import evaluate_command

            return evaluate_command(args.pred, args.gt, args.label_convention, args.tolerance, args.instances,
                                    args.csv, args.json, args.report, args.case_pages)
        if command == "cv-summary":
            from medseg.evaluation.cv import cv_summary_command

            return cv_summary_command(args.root, args.tolerance, args.json, args.csv)
        if command == "find-best":
            from medseg.evaluation.cv import find_best_command

            return find_best_command(args.roots, args.tolerance, args.output)
        if command == "robustness":
            from medseg.evaluation.robustness import robustness_command

            return robustness_command(args.model, args.datalist, args.cases, args.perturbations, args.output,
                                      args.heldout, args.label_convention, args.seed, args.device, argv[1:],
                                      args.compare, args.keep_largest, args.lesion_flair_z)
        if command == "bench":
            from medseg.bench.run import bench

            bench(args.config, args.archs, args.blocks, shape=args.shape, repeats=args.repeats,
                  device=args.device, dtype=args.dtype, channels_last=args.channels_last, compile=args.compile,
                  widths=args.widths, overlap=args.overlap,
                  threads=args.threads, layer_size=args.layer_size, json_out=args.json,
                  block_kwargs=block_settings(args.block_kwargs))
            return 0
        if command == "check-data":
            from medseg.data.fingerprint import check_data

            return check_data(args.root, args.datalist, args.modalities, args.label_convention, args.voxel_size,
                              args.json)
        if command == "doctor":
            from medseg.doctor import doctor

            return doctor()
        from medseg.demo import demo

        return demo(args.output, args.minutes)
    except BrokenPipeError:  # `medseg models | head`: the reader has gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    except Exception as e:
        cause = user_error(e)
        if debug or cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
