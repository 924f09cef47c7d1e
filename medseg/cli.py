"""`medseg` command: dispatches to train, predict and demo; turns bad input into one `error: …` line."""

import argparse
import sys

from medseg import __version__
from medseg.errors import MedsegError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medseg", description="3D segmentation of brain MRI and EM volumes.")
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="train a network (LightningCLI: --config, dotted overrides, --print_config)",
                   add_help=False)
    p = sub.add_parser("predict", help="segment scans with a trained checkpoint")
    p.add_argument("inputs", nargs="+", help="a case folder, a 4D NIfTI (channels last) or one file per channel")
    p.add_argument("--model", required=True, help="checkpoint written by medseg train (best.ckpt)")
    p.add_argument("--output", help="mask path (default: ./<case>_pred.nii.gz); .tif for EM TIFF output")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap (default: 0.5)")
    d = sub.add_parser("demo", help="train a small model on the bundled sample and segment a held-out case")
    d.add_argument("--output", default="medseg-demo", help="run folder (default: ./medseg-demo)")
    d.add_argument("--minutes", type=float, default=3.0, help="training time (default: 3)")
    return parser


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
    if argv and argv[0] == "train":  # everything after `train` belongs to LightningCLI
        command, rest = "train", argv[1:]
    else:
        args = build_parser().parse_args(argv)
        command = args.command
    try:
        if command == "train":
            from medseg.train import train

            return train(rest)
        if command == "predict":
            from medseg.predict import predict

            predict(args.inputs, args.model, args.output, overwrite=args.overwrite, device=args.device,
                    overlap=args.overlap)
            return 0
        from medseg.demo import demo

        return demo(args.output, args.minutes)
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
