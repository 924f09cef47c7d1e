"""Split the ISBI 2012 training stack into train/validation sub-stacks and write an MSD-style datalist.

    python -m medseg.data.conversion.isbi2012 ../shared/data/isbi2012_em data/isbi2012

The challenge's 30 labelled sections are one volume; sections 0-23 train, 24-29 validate (a z split, so no
section is seen in both). Files are written as TIFF (z, y, x), unchanged voxel values.
"""

import argparse
from pathlib import Path

import tifffile

from medseg.data.datasets import write_datalist


def prepare(source: Path, out: Path, val_sections: int = 6) -> Path:
    image = tifffile.imread(source / "train-volume.tif")
    label = tifffile.imread(source / "train-labels.tif")
    out.mkdir(parents=True, exist_ok=True)
    split = image.shape[0] - val_sections
    for name, sl in (("train", slice(0, split)), ("val", slice(split, None))):
        tifffile.imwrite(out / f"{name}-volume.tif", image[sl], compression="zlib")
        tifffile.imwrite(out / f"{name}-labels.tif", label[sl], compression="zlib")
    return write_datalist(out, "ISBI 2012 ssTEM, 4x4x50 nm; labels 255 = cell interior, 0 = membrane",
                          [{"image": "train-volume.tif", "label": "train-labels.tif"}],
                          [{"image": "val-volume.tif", "label": "val-labels.tif"}])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder with train-volume.tif and train-labels.tif")
    parser.add_argument("out", type=Path, help="output folder (datalist.json goes there)")
    args = parser.parse_args()
    print(prepare(args.source, args.out))
