"""Write the MSD-style datalist of the two gala FIB-SEM crops: train-* trains, test-* validates.

    python -m medseg.data.conversion.fibsem ../shared/data/gala_fibsem_em data/fibsem

The HDF5 files are used where they are (no copy); the datalist holds their absolute paths.
"""

import argparse
from pathlib import Path

from medseg.data.datasets import write_datalist


def prepare(source: Path, out: Path) -> Path:
    source = source.resolve()
    for name in ("train-image.h5", "train-gt.lzf.h5", "test-image.h5", "test-gt.lzf.h5"):
        if not (source / name).is_file():
            raise SystemExit(f"error: {source / name}: missing (expected the gala_fibsem_em folder)")
    return write_datalist(out, "gala FIB-SEM crops (Drosophila medulla, ~10 nm isotropic); labels: neuron ids, "
                          "0 = boundary",
                          [{"image": str(source / "train-image.h5"), "label": str(source / "train-gt.lzf.h5")}],
                          [{"image": str(source / "test-image.h5"), "label": str(source / "test-gt.lzf.h5")}])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the gala_fibsem_em folder")
    parser.add_argument("out", type=Path, help="output folder (datalist.json goes there)")
    args = parser.parse_args()
    print(prepare(args.source, args.out))
