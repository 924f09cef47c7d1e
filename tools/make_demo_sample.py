"""Build the demo sample in data/brats_sample from ../shared/data: 2 mm, cropped to the brain, FLAIR + T1ce.

    python tools/make_demo_sample.py ../shared/data data/brats_sample

Each case is resampled to 2 mm (linear for images, nearest for labels), cropped to its non-zero box plus a 4-voxel
margin, stored as int16 (z-scored float sources shifted so their constant background is 0, then scaled by 100)
and written in BraTS layout `<case>/<case>_{flair,t1ce,seg}.nii.gz` with the source orientation kept. Five cases
train (one of them is held out for validation by the recipe), one (`heldout/`) is only ever predicted.
"""

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from monai import transforms as T

from medseg.data.transforms import background_to_zero

BRATS21 = "brats2021_case00006"
DEEPMEDIC = "deepmedic_brats2015_subset"
TRAIN = ["train/brats_2013_pat0005_1", "train/brats_2013_pat0006_1", "validation/brats_2013_pat0003_1",
         "validation/brats_2013_pat0004_1"]
HELDOUT = "test/brats_2013_pat0001_1"


def sources(shared: Path) -> list[tuple[str, dict[str, Path], str]]:
    b = shared / BRATS21
    cases = [("BraTS2021_00006", {m: b / f"BraTS2021_00006_{m}.nii.gz" for m in ("flair", "t1ce", "seg")}, "train")]
    for rel in [*TRAIN, HELDOUT]:
        d = shared / DEEPMEDIC / rel
        files = {"flair": d / "Flair_subtrMeanDivStd.nii.gz", "t1ce": d / "T1c_subtrMeanDivStd.nii.gz",
                 "seg": d / "OTMultiClass.nii.gz"}
        cases.append((d.name, files, "heldout" if rel == HELDOUT else "train"))
    return cases


def convert(files: dict[str, Path], case_dir: Path) -> None:
    keys = list(files)
    chain = T.Compose([
        T.LoadImaged(keys, image_only=True, ensure_channel_first=True),
        T.Lambdad(["flair", "t1ce"], background_to_zero),
        T.Spacingd(keys, pixdim=(2.0, 2.0, 2.0), mode=["bilinear", "bilinear", "nearest"]),
        T.CropForegroundd(keys, source_key="flair", select_fn=lambda x: x != 0, margin=4),
    ])
    data = chain({k: str(v) for k, v in files.items()})
    case_dir.mkdir(parents=True, exist_ok=True)
    for key in keys:
        image = data[key]
        array = image[0].numpy()
        scale = 100.0 if key != "seg" and np.abs(array).max() < 100 else 1.0  # z-scored floats -> int16
        out = np.round(array * scale).astype(np.uint8 if key == "seg" else np.int16)
        nib.save(nib.Nifti1Image(out, image.affine.numpy()), case_dir / f"{case_dir.name}_{key}.nii.gz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shared", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    for name, files, split in sources(args.shared):
        convert(files, args.out / split / name)
        print(split, name)


if __name__ == "__main__":
    main()
