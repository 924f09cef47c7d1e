"""Bad input never gives a traceback: exit code 2, one `error: …` line naming the file, nothing written.

Most cases call `medseg.cli.main` in-process (it returns the exit code and prints the error line); one test runs
the installed `medseg` console script to check the same contract end to end.
"""

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.cli import main
from tests.conftest import BRATS_AFFINE, REPO, TINY, console_script, synthetic_case, write_case

# ----------------------------------------------------------------------------------------------------- helpers


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def save(path: Path, array: np.ndarray, affine: np.ndarray = BRATS_AFFINE) -> Path:
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def channel_files(folder: Path, name: str = "case", seed: int = 0) -> tuple[Path, Path]:
    """A valid (flair, t1ce) pair of NIfTI files."""
    channels, _ = synthetic_case(seed)
    return tuple(save(folder / f"{name}_{m}.nii.gz", channels[m]) for m in ("flair", "t1ce"))


def truncate(path: Path, keep: float = 0.6) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    """main(argv) -> (exit code, stdout, stderr); an exception escaping main fails the test with its chain."""
    try:
        rc = main(argv)
    except (Exception, SystemExit) as e:
        cause = e.__cause__ or e.__context__
        pytest.fail(f"medseg {argv[0]} raised {type(e).__name__}: {e} (caused by {cause!r}) instead of exiting 2")
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_error_line(rc: int, err: str, named: list[Path]) -> str:
    """Exit code 2, no traceback, exactly one `error: ` line, and it names one of the files/folders involved."""
    assert rc == 2, f"exit code {rc}, stderr:\n{err}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, f"expected one 'error: ' line, got {len(lines)}:\n{err}"
    assert any(str(p) in lines[0] for p in named), f"{lines[0]!r} names none of {[str(p) for p in named]}"
    return lines[0]


# ----------------------------------------------------------------------------------------------------- predict
# Each maker writes its inputs under `folder` and returns (inputs, model checkpoint, paths the error may name).


def missing_file(folder, ckpt):
    _, t1ce = channel_files(folder)
    missing = folder / "absent_flair.nii.gz"
    return [missing, t1ce], ckpt, [missing]


def missing_folder(folder, ckpt):
    missing = folder / "no_such_case"
    return [missing], ckpt, [missing]


def text_named_nifti(folder, ckpt):
    _, t1ce = channel_files(folder)
    scan = folder / "scan.nii.gz"
    scan.write_text("MRI report: no image in here, just text.\n" * 20)
    return [scan, t1ce], ckpt, [scan]


def truncated_gzip(folder, ckpt):
    flair, t1ce = channel_files(folder)
    return [truncate(flair), t1ce], ckpt, [flair]


def image_2d(shape):
    def make(folder, ckpt):
        _, t1ce = channel_files(folder)
        flat = save(folder / "flat_flair.nii.gz", np.random.default_rng(0).random(shape, dtype=np.float32) * 100)
        assert nib.load(flat).shape == shape
        return [flat, t1ce], ckpt, [flat]

    return make


def missing_modality(folder, ckpt):
    case = write_case(folder, "case", seed=0)  # flair, t1ce, seg ...
    (case / "case_t1ce.nii.gz").unlink()  # ... minus t1ce
    return [case], ckpt, [case]


def unidentified_file(folder, ckpt):
    flair, t1ce = channel_files(folder)
    extra = shutil.copy(flair, folder / "case_extra.nii.gz")  # no modality in its name: never guessed
    return [flair, t1ce, extra], ckpt, [extra]


def four_d_three_channels(folder, ckpt):
    channels, _ = synthetic_case(0)
    path = save(folder / "msd_case.nii.gz", np.stack([channels["flair"], channels["t1ce"], channels["flair"]], -1))
    return [path], ckpt, [path]


def nan_volume(folder, ckpt):
    channels, _ = synthetic_case(0)
    flair = save(folder / "case_flair.nii.gz", channels["flair"])
    t1ce = save(folder / "case_t1ce.nii.gz", np.full_like(channels["t1ce"], np.nan))
    return [flair, t1ce], ckpt, [t1ce]


def inf_voxel(folder, ckpt):
    channels, _ = synthetic_case(0)
    flair_array = channels["flair"].copy()
    flair_array[16, 18, 14] = np.inf
    flair = save(folder / "case_flair.nii.gz", flair_array)
    t1ce = save(folder / "case_t1ce.nii.gz", channels["t1ce"])
    return [flair, t1ce], ckpt, [flair]


def shape_mismatch(folder, ckpt):
    flair = save(folder / "case_flair.nii.gz", synthetic_case(0)[0]["flair"])
    t1ce = save(folder / "case_t1ce.nii.gz", synthetic_case(0, shape=(30, 36, 28))[0]["t1ce"])
    return [flair, t1ce], ckpt, [t1ce]


def empty_folder(folder, ckpt):
    empty = folder / "empty_case"
    empty.mkdir()
    return [empty], ckpt, [empty]


def corrupt_checkpoint(folder, ckpt):
    case = write_case(folder, "case", seed=0, with_label=False)
    bad = folder / "best.ckpt"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    return [case], bad, [bad]


def plain_dict_checkpoint(folder, ckpt):
    case = write_case(folder, "case", seed=0, with_label=False)
    bad = folder / "plain.ckpt"
    torch.save({"state_dict": {"net.weight": torch.zeros(4, 2, 3, 3, 3)}, "epoch": 3}, bad)
    return [case], bad, [bad]


def wrong_shape_checkpoint(folder, ckpt):
    case = write_case(folder, "case", seed=0, with_label=False)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert "medseg" in state
    key = next(k for k, v in state["state_dict"].items() if k.startswith("net.") and v.ndim == 5)
    weight = state["state_dict"][key]
    state["state_dict"][key] = torch.zeros(weight.shape[0] + 1, *weight.shape[1:])
    bad = folder / "reshaped.ckpt"
    torch.save(state, bad)
    return [case], bad, [bad]


PREDICT_CASES = {
    "missing-file": missing_file,
    "missing-folder": missing_folder,
    "text-named-nii-gz": text_named_nifti,
    "truncated-nii-gz": truncated_gzip,
    "2d-32x36": image_2d((32, 36)),
    "2d-32x36x1": image_2d((32, 36, 1)),
    "folder-missing-t1ce": missing_modality,
    "unidentified-third-file": unidentified_file,
    "4d-with-3-channels": four_d_three_channels,
    "nan-volume": nan_volume,
    "inf-voxel": inf_voxel,
    "channel-shapes-differ": shape_mismatch,
    "empty-folder": empty_folder,
    "corrupt-checkpoint": corrupt_checkpoint,
    "checkpoint-without-medseg-metadata": plain_dict_checkpoint,
    "checkpoint-tensor-wrong-shape": wrong_shape_checkpoint,
}


@pytest.mark.parametrize("make", list(PREDICT_CASES.values()), ids=list(PREDICT_CASES))
def test_predict_bad_input(tmp_path, tiny_ckpt, capsys, make):
    folder = tmp_path / "in"
    folder.mkdir()
    inputs, model, named = make(folder, tiny_ckpt)
    before = tree_digests(folder)
    ckpt_digest = sha256(tiny_ckpt)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "mask.nii.gz"

    rc, stdout, err = run_cli(capsys, ["predict", *map(str, inputs), "--model", str(model), "--output", str(out),
                                       "--device", "cpu"])

    assert_one_error_line(rc, err, named)
    assert "wrote" not in stdout
    assert not out.exists()
    assert sorted(p.name for p in out_dir.iterdir()) == []  # no stray .tmp-* file either
    assert tree_digests(folder) == before
    assert sha256(tiny_ckpt) == ckpt_digest


def test_console_script_missing_input(tmp_path, tiny_ckpt):
    """The installed `medseg` command: exit status 2 and one clean error line, end to end."""
    missing = tmp_path / "no_such_scan_flair.nii.gz"
    out = tmp_path / "out" / "mask.nii.gz"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run([console_script(), "predict", str(missing), "--model", str(tiny_ckpt), "--output", str(out),
                           "--device", "cpu"], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)

    assert_one_error_line(proc.returncode, proc.stderr, [missing])
    assert not out.exists()
    assert not out.parent.exists() or not list(out.parent.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing in cwd either (no default output)


# ----------------------------------------------------------------------------------------------------- train
# Each maker writes its data under `folder` and returns (extra CLI arguments, paths the error may name).


def brats_root(folder: Path, n: int = 3) -> Path:
    root = folder / "brats"
    for i in range(n):
        write_case(root, f"case{i}", seed=i)
    return root


def datalist_entries(n: int = 3) -> list[dict]:
    return [{"image": [f"case{i}/case{i}_flair.nii.gz", f"case{i}/case{i}_t1ce.nii.gz"],
             "label": f"case{i}/case{i}_seg.nii.gz"} for i in range(n)]


def train_missing_root(folder):
    root = folder / "no_such_root"
    return [f"--data.root={root}"], [root]


def train_empty_root(folder):
    root = folder / "empty_root"
    root.mkdir()
    return [f"--data.root={root}"], [root]


def train_datalist_missing_file(folder):
    root = brats_root(folder)
    entries = datalist_entries()
    entries[1]["image"][1] = "case1/case1_t1c.nii.gz"  # a typo: no such file
    datalist = root / "dataset.json"
    datalist.write_text(json.dumps({"training": entries}, indent=1))
    return [f"--data.datalist={datalist}"], [(root / "case1" / "case1_t1c.nii.gz").resolve()]


def train_datalist_not_json(folder):
    root = brats_root(folder)
    datalist = root / "dataset.json"
    datalist.write_text(json.dumps({"training": datalist_entries()}, indent=1)[:-40])  # cut short: invalid JSON
    return [f"--data.datalist={datalist}"], [datalist]


def train_label_outside_convention(folder):
    root = brats_root(folder)
    seg = root / "case1" / "case1_seg.nii.gz"
    img = nib.load(seg)
    label = np.asanyarray(img.dataobj).copy()
    assert (label == 1).any()
    label[label == 1] = 3  # BraTS 2013's non-enhancing label: not part of brats2021 (0, 1, 2, 4)
    save(seg, label, img.affine)
    return [f"--data.root={root}", "--data.label_convention=brats2021"], [seg]


def train_truncated_image(folder):
    root = brats_root(folder)
    return [f"--data.root={root}"], [truncate(root / "case2" / "case2_t1ce.nii.gz")]


TRAIN_CASES = {
    "missing-root": train_missing_root,
    "empty-root": train_empty_root,
    "datalist-lists-missing-file": train_datalist_missing_file,
    "datalist-not-json": train_datalist_not_json,
    "label-3-in-brats2021": train_label_outside_convention,
    "truncated-training-image": train_truncated_image,
}


@pytest.mark.parametrize("make", list(TRAIN_CASES.values()), ids=list(TRAIN_CASES))
def test_train_bad_input(tmp_path, capsys, make):
    folder = tmp_path / "in"
    folder.mkdir()
    extra, named = make(folder)
    before = tree_digests(folder)
    run = tmp_path / "run"

    rc, _, err = run_cli(capsys, ["train", "--config", str(REPO / "configs/brats.yaml"), *TINY,
                                  f"--trainer.default_root_dir={run}", "--trainer.max_steps=1", *extra])

    assert_one_error_line(rc, err, named)
    assert tree_digests(folder) == before
    assert not list(run.rglob("*.ckpt"))
