"""Write the MSD-style datalist of the shared BraTS data used by the experiment table and the bundled model.

    python -m medseg.data.conversion.brats ../shared/data brats.json [--heldout brats_2013_pat0001_1 ...]
    python -m medseg.data.conversion.brats ../shared/data brats-all.json --heldout   # all 7 cases, see --monitor

FLAIR + T1ce of BraTS2021_00006 and the six DeepMedic BraTS 2013 patients (labels read with the `brats2013`
convention, of which BraTS 2021's {0, 1, 2, 4} is a subset). The held-out cases go to the `validation` list: training
only monitors them (the bundled model is the last checkpoint of a fixed step budget, never chosen by them).
"""

import argparse
import json
from pathlib import Path

DEEPMEDIC = "deepmedic_brats2015_subset"


def cases(shared: Path) -> list[dict]:
    b = shared / "brats2021_case00006"
    out = [{"case": "BraTS2021_00006", "image": [str(b / f"BraTS2021_00006_{m}.nii.gz") for m in ("flair", "t1ce")],
            "label": str(b / "BraTS2021_00006_seg.nii.gz")}]
    for d in sorted((shared / DEEPMEDIC).glob("*/brats_2013_pat*")):
        images = [str(d / "Flair_subtrMeanDivStd.nii.gz"), str(d / "T1c_subtrMeanDivStd.nii.gz")]
        out.append({"case": d.name, "image": images, "label": str(d / "OTMultiClass.nii.gz")})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shared", type=Path, help="the shared data folder (../shared/data)")
    parser.add_argument("output", type=Path, help="datalist JSON to write")
    parser.add_argument("--heldout", nargs="*", default=["brats_2013_pat0001_1"], help="cases held out")
    parser.add_argument("--monitor", default="brats_2013_pat0001_1",
                        help="with no held-out case, the training case validation monitors (not a held-out score)")
    args = parser.parse_args()
    every = cases(args.shared.resolve())
    missing = set(args.heldout) - {c["case"] for c in every}
    if missing:
        raise SystemExit(f"error: unknown held-out cases {sorted(missing)}")
    spec = {"training": [c for c in every if c["case"] not in args.heldout],
            "validation": [c for c in every if c["case"] in (args.heldout or [args.monitor])]}
    args.output.write_text(json.dumps(spec, indent=1))
    held = f"{len(spec['validation'])} held-out" if args.heldout else f"monitoring {args.monitor} (trained on)"
    print(f"{args.output}: {len(spec['training'])} training cases, {held}")


if __name__ == "__main__":
    main()
