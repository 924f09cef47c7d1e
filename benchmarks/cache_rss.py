"""Peak memory of `medseg train` with the disk cache at 25 and 100 cases (it must not grow), and with the RAM cache.

    python benchmarks/cache_rss.py --work /tmp/cache-rss [--cases 100] [--shape 160 160 128]

Writes N synthetic 1 mm BraTS-like cases (2 channels int16 + label, uncompressed NIfTI, 160×160×128 by default:
16 MB a case on disk), then runs one training epoch per setting (every case is read, so the disk cache is filled),
each in a fresh process with one torch thread, and reports the process's peak RSS (VmHWM), wall time and the size
of the disk cache. The network is tiny (patches 32³) so that the numbers show the data pipeline, not the model.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1, 0, 239], [0, 0, 1, 0], [0, 0, 0, 1]])  # 1 mm, BraTS's LPS grid


def write_cases(root: Path, n: int, shape: tuple[int, int, int]) -> None:
    """A brain ellipsoid with a tumour (edema 2, core 1, enhancing 4) per case; skips cases already written."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij"))
    brain = (grid**2).sum(0) < 0.8
    for i in range(n):
        case = root / f"case{i:04d}"
        if (case / f"case{i:04d}_seg.nii").exists():
            continue
        case.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(i)
        r = np.sqrt(((grid - rng.uniform(-0.3, 0.3, 3).astype(np.float32)[:, None, None, None]) ** 2).sum(0))
        label = np.select([r < 0.08, r < 0.12, r < 0.2], [1, 4, 2], 0).astype(np.uint8) * brain
        for name, bright in (("flair", label > 0), ("t1ce", label == 4)):
            image = (400 + 300 * bright + rng.normal(0, 40, shape)) * brain
            nib.save(nib.Nifti1Image(image.astype(np.int16), AFFINE), case / f"case{i:04d}_{name}.nii")
        nib.save(nib.Nifti1Image(label, AFFINE), case / f"case{i:04d}_seg.nii")


def subset(root: Path, n: int) -> Path:
    """A folder holding links to the first n cases."""
    sub = root.parent / f"{root.name}-{n}"
    sub.mkdir(exist_ok=True)
    for case in sorted(root.iterdir())[:n]:
        if not (sub / case.name).exists():
            (sub / case.name).symlink_to(case)
    return sub


def child(root: str, cache: str, cache_dir: str, run: str) -> None:
    """One epoch of `medseg train` in this process, then its peak RSS as JSON on the last line."""
    import torch

    from medseg.cli import main

    torch.set_num_threads(1)
    rc = main(["train", "--config", str(REPO / "configs/brats.yaml"), f"--data.root={root}",
               "--data.modalities=[flair, t1ce]", "--data.spacing=null", "--data.patch_size=[32,32,32]",
               f"--data.cache={cache}", f"--data.cache_dir={cache_dir}", "--model.channels=[4,8]",
               "--model.strides=[1,2]", "--model.kernel_sizes=[3,3]", "--trainer.accelerator=cpu",
               "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.max_epochs=1",
               f"--trainer.default_root_dir={run}"])
    status = Path("/proc/self/status").read_text()
    peak = int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1))
    print(json.dumps({"rc": rc, "peak_rss_mb": round(peak / 1024)}))


def measure(root: Path, n: int, cache: str, work: Path) -> dict:
    tag = f"{cache}-{n}"
    cache_dir = work / f"cache-{tag}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", str(subset(root, n)), cache, str(cache_dir),
                          str(work / f"run-{tag}")], env=env, cwd=REPO, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {"rc": None}
    if result["rc"] != 0:
        raise SystemExit(f"{tag} failed:\n{out.stderr[-3000:]}")
    files = list(cache_dir.rglob("*.pt"))
    return {"cache": cache, "cases": n, **result, "wall_s": round(time.perf_counter() - start),
            "disk_cache_mb": round(sum(f.stat().st_size for f in files) / 2**20),
            "disk_cache_mb_per_case": round(sum(f.stat().st_size for f in files) / 2**20 / max(1, len(files)), 1)}


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        return child(*sys.argv[2:6])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="folder for the cases, caches and runs")
    p.add_argument("--cases", type=int, default=100)
    p.add_argument("--shape", type=int, nargs=3, default=[160, 160, 128])
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    root = args.work / "cases"
    write_cases(root, args.cases, tuple(args.shape))
    small = max(2, args.cases // 4)
    rows = [measure(root, n, cache, args.work) for cache, n in
            (("disk", small), ("disk", args.cases), ("ram", small // 2), ("ram", small))]
    for row in rows:
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"shape": args.shape, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
