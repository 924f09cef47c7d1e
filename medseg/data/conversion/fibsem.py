"""Write the MSD-style datalists of the two gala FIB-SEM crops.

    python -m medseg.data.conversion.fibsem ../shared/data/gala_fibsem_em data/fibsem

datalist.json: train-* trains, test-* validates (the recipe's form; the HDF5 files are used where they are).
For honest numbers (checkpoint and decoding chosen on data that is not reported) it also writes, in `out`:
  train2test.json: train-* trains, the first half (x < 100) of test-* validates, the second half is `test`;
  test2train.json: the same with the crops swapped;
and the reported halves as HDF5 files (`<crop>-report-image.h5`, `<crop>-report-gt.h5`), plus two copies of each
report image with other contrast: `-sd34` (intensities scaled around their mean to sd x 34/55, the sd of another
FIB-SEM volume against the shared crops') and `-gamma` (gamma 1.5 on the 0-255 range).
"""

import argparse
import json
from pathlib import Path

import h5py
import numpy as np

from medseg.data.datasets import write_datalist
from medseg.utils.files import atomic_write

HALF = 100  # x: the crops are 50 x 100 x 200 (z, y, x)


def read(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f["stack"][()]


def write(path: Path, array: np.ndarray) -> str:
    def save(target: Path) -> None:
        with h5py.File(target, "w") as f:
            f.create_dataset("stack", data=array, compression="gzip")
    atomic_write(path, save)
    return str(path)


def other_contrast(image: np.ndarray) -> dict[str, np.ndarray]:
    """The report image with the contrast of another volume: sd scaled by 34/55 around the mean, and gamma 1.5."""
    x = image.astype(np.float64)
    sd34 = x.mean() + (x - x.mean()) * 34 / 55
    gamma = 255 * (x / 255) ** 1.5
    return {"sd34": np.clip(np.round(sd34), 0, 255).astype(np.uint8),
            "gamma": np.clip(np.round(gamma), 0, 255).astype(np.uint8)}


def split(source: Path, out: Path, train: str, test: str) -> Path:
    """`<train>2<test>.json`: train on crop `train`, validate on the first half of `test`, report its second."""
    image, gt = read(source / f"{test}-image.h5"), read(source / f"{test}-gt.lzf.h5")
    val = {"image": write(out / f"{test}-val-image.h5", image[..., :HALF]),
           "label": write(out / f"{test}-val-gt.h5", gt[..., :HALF])}
    report = {"image": write(out / f"{test}-report-image.h5", image[..., HALF:]),
              "label": write(out / f"{test}-report-gt.h5", gt[..., HALF:])}
    for name, copy in other_contrast(image[..., HALF:]).items():
        write(out / f"{test}-report-image-{name}.h5", copy)
    spec = {"description": f"gala FIB-SEM: train on {train}-*, select on {test}-* x < {HALF}, report {test}-* "
                           f"x >= {HALF}",
            "training": [{"image": str(source / f"{train}-image.h5"), "label": str(source / f"{train}-gt.lzf.h5")}],
            "validation": [val], "test": [report]}
    path = out / f"{train}2{test}.json"
    atomic_write(path, lambda p: p.write_text(json.dumps(spec, indent=2)))
    return path


def prepare(source: Path, out: Path) -> Path:
    source, out = source.resolve(), out.resolve()
    for name in ("train-image.h5", "train-gt.lzf.h5", "test-image.h5", "test-gt.lzf.h5"):
        if not (source / name).is_file():
            raise SystemExit(f"error: {source / name}: missing (expected the gala_fibsem_em folder)")
    out.mkdir(parents=True, exist_ok=True)
    split(source, out, "train", "test")
    split(source, out, "test", "train")
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
