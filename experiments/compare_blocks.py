"""Do efficient blocks keep Dice? Train arch × block variants and recipe ablations under one budget, predict the
held-out cases with `medseg predict`, and tabulate Dice against cost (JSON, CSV, Markdown, PNG).

    python experiments/compare_blocks.py --shared ../shared/data --out runs/compare          # the README table
    python experiments/compare_blocks.py --datalist cases.json --out runs/quick --quick      # minutes, for tests

Data: the shared BraTS FLAIR + T1ce cases (medseg.data.conversion.brats) with brats_2013_pat0001_1 and
brats_2013_pat0002_1 held out, or any datalist whose `validation` list is the held-out set. Held-out cases are
never seen in training nor used for selection: training does not validate, and the last checkpoint is predicted.
Each variant × seed runs under two budgets, the same number of steps and (separately) the same wall time. Every run
is a fresh process calling medseg.cli.main (train, then predict per held-out case on its native grid) and writes
<out>/runs/<budget>/<variant>/seed<k>/result.json; a run whose result exists is not rerun, so a killed table resumes.
"""

import argparse
import contextlib
import json
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python experiments/compare_blocks.py` from a checkout imports this medseg and scripts

from experiments.compare_report import write_report  # noqa: E402
from medseg.data.conversion.brats import cases as shared_cases  # noqa: E402
from medseg.utils.files import atomic_write  # noqa: E402

HELDOUT = ["brats_2013_pat0001_1", "brats_2013_pat0002_1"]
ABLATIONS = {"+nnunet-aug": ["--data.augmentation=nnunet"], "+deep-sup": ["--model.deep_supervision=true"],
             "+inner-act": ["--model.block_kwargs={inner_act: true}"],  # PmSCn: norm + act in every layer's streams
             "+linear": ["--model.block_kwargs={inner_act: false}"]}  # … in none (all layers a rank-limited conv)
DEFAULT_VARIANTS = ["unet-conv", "unet-pmscn", "unet-cakes", "unet-sic", "unet-conv+nnunet-aug", "unet-conv+deep-sup"]
QUICK_NET = ["--model.channels=[4,8,16]", "--model.strides=[1,2,2]", "--model.kernel_sizes=[3,3,3]",
             "--data.patch_size=[32,32,32]"]


def variant_args(name: str) -> list[str]:
    """`<arch>-<block>[+ablation…]` → medseg train overrides; unknown parts raise a SystemExit naming the valid ones."""
    from medseg.blocks import BLOCKS
    from medseg.nets import NETS

    base, *ablations = name.split("+")
    arch, _, block = base.partition("-")
    if arch not in NETS or block not in BLOCKS or any(f"+{a}" not in ABLATIONS for a in ablations):
        raise SystemExit(f"error: unknown variant {name!r}: <arch>-<block>[+ablation…] with arch in {sorted(NETS)}, "
                         f"block in {sorted(BLOCKS)}, ablation in {sorted(ABLATIONS)}")
    return [f"--model.arch={arch}", f"--model.block={block}", *(arg for a in ablations for arg in ABLATIONS[f"+{a}"])]


def split(args: argparse.Namespace) -> tuple[Path, list[dict]]:
    """A training-only datalist under <out> and the held-out cases."""
    if args.datalist:
        spec = json.loads(Path(args.datalist).read_text())
        root = Path(args.datalist).resolve().parent
        absolute = lambda c: {**c, "image": [str(root / p) for p in c["image"]], "label": str(root / c["label"])}  # noqa: E731
        train, heldout = [absolute(c) for c in spec["training"]], [absolute(c) for c in spec["validation"]]
    else:
        every = shared_cases(Path(args.shared).resolve())
        train = [c for c in every if c["case"] not in HELDOUT]
        heldout = [c for c in every if c["case"] in HELDOUT]
    if not train or not heldout:
        raise SystemExit("error: need training cases and held-out cases")
    path = Path(args.out) / "train.json"
    path.write_text(json.dumps({"training": train}, indent=1))
    return path, heldout


def budget_args(budget: str, steps: int, minutes: float) -> list[str]:
    """Equal steps: one epoch of `steps` batches. Equal time: a Timer of `minutes` (started after data caching)."""
    from medseg.demo import duration

    timer = {"class_path": "lightning.pytorch.callbacks.Timer",
             "init_args": {"duration": duration(minutes) if budget == "time" else None, "interval": "step"}}
    epoch = steps if budget == "steps" else 1_000_000  # the time budget stops mid-epoch
    return [f"--trainer.max_steps={steps if budget == 'steps' else -1}", "--trainer.max_epochs=-1",
            f"--data.steps_per_epoch={epoch}", f"--trainer.callbacks+={json.dumps(timer)}"]


def run_one(job: dict) -> dict:
    """Train one variant × seed × budget, predict the held-out cases with its last.ckpt, write result.json."""
    import torch

    torch.set_num_threads(job["threads"])
    run = Path(job["dir"])
    run.mkdir(parents=True, exist_ok=True)
    with open(run / "log.txt", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        result = train_and_predict(job, run)
    # atomic: a half-written result would be taken as done on resume
    atomic_write(run / "result.json", lambda p: p.write_text(json.dumps(result, indent=1)))
    return result


def train_and_predict(job: dict, run: Path) -> dict:
    import nibabel as nib
    import numpy as np
    import torch

    from medseg.bench.flops import count_flops
    from medseg.cli import main
    from medseg.evaluation.metrics import evaluate_case
    from medseg.models.loading import build_model, load_checkpoint

    # no validation (held-out cases stay unseen); monitor=null: Lightning saves last.ckpt only beside a top-k save
    rc = main(["train", "--config", str(REPO / "configs" / "brats.yaml"), f"--data.datalist={job['datalist']}",
               "--data.modalities=[flair, t1ce]", "--data.label_convention=brats2013", "--data.val_cases=0",
               "--trainer.limit_val_batches=0", "--checkpoint.monitor=null", "--trainer.logger=false",
               "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={run}",
               f"--seed_everything={job['seed']}", *job["train_args"]])
    ckpt_path = run / "checkpoints" / "last.ckpt"
    if rc != 0 or not ckpt_path.is_file():
        raise RuntimeError(f"{run}: training failed (exit {rc}), see {run / 'log.txt'}")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    timer = next(v for k, v in ckpt["callbacks"].items() if k.startswith("Timer"))
    train_s, steps = timer["time_elapsed"]["train"], ckpt["global_step"]
    data = ckpt["datamodule_hyper_parameters"]
    plan, state = load_checkpoint(ckpt_path)
    net = build_model(plan, state, ckpt_path)
    with torch.inference_mode():
        flops = count_flops(net, torch.zeros(1, len(plan.modalities), *plan.patch_size))
    cases = {}
    for case in job["heldout"]:
        out = run / "pred" / f"{case['case']}.nii.gz"
        start = time.perf_counter()
        rc = main(["predict", *case["image"], "--model", str(ckpt_path), "--output", str(out), "--overwrite"])
        seconds = time.perf_counter() - start
        if rc != 0:
            raise RuntimeError(f"{run}: predict failed on {case['case']} (exit {rc})")
        pred, truth = (np.asarray(nib.load(p).dataobj) for p in (out, case["label"]))
        dice = {r: m["dice"] for r, m in evaluate_case(pred, truth, "brats2013").items()}
        cases[case["case"]] = {**dice, "predict_s": seconds}
    regions = [r for r in next(iter(cases.values())) if r != "predict_s"]
    return {"variant": job["variant"], "budget": job["budget"], "seed": job["seed"], "steps": steps,
            "train_s": train_s, "s_per_step": train_s / max(1, steps), "threads": job["threads"],
            "patches_per_step": data["batch_size"] * data["samples_per_case"],
            "params": sum(p.numel() for p in net.parameters()), "flops": flops, "patch": list(plan.patch_size),
            "predict_s": float(np.mean([c["predict_s"] for c in cases.values()])),
            "dice": {r: float(np.mean([c[r] for c in cases.values()])) for r in regions}, "cases": cases,
            "train_args": job["train_args"]}


def jobs(args: argparse.Namespace, datalist: Path, heldout: list[dict]) -> list[dict]:
    """Budget-major, then seed order, so a table cut short has whole budgets with every seed and variant."""
    extra = (QUICK_NET if args.quick else []) + args.set
    return [{"variant": v, "budget": b, "seed": s, "threads": args.threads, "datalist": str(datalist),
             "heldout": heldout, "dir": str(Path(args.out) / "runs" / b / v / f"seed{s}"),
             "train_args": [*variant_args(v), *budget_args(b, args.steps, args.minutes), *extra]}
            for b in args.budgets for s in args.seeds for v in args.variants]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--shared", help="the shared data folder (../shared/data): BraTS FLAIR + T1ce cases")
    data.add_argument("--datalist", help="MSD-style JSON; its `validation` list is the held-out set")
    p.add_argument("--out", required=True, help="output folder (runs, results.json/csv, table.md, dice_vs_cost.png)")
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, help="<arch>-<block>[+nnunet-aug][+deep-sup]")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--budgets", nargs="+", choices=["steps", "time"], default=["steps", "time"])
    p.add_argument("--steps", type=int, default=40, help="equal-steps budget (default: 40)")
    p.add_argument("--minutes", type=float, default=1.5, help="equal-time budget per run (default: 1.5)")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (default: 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default: 1)")
    p.add_argument("--set", action="append", default=[], metavar="--KEY=VALUE",
                   help="extra medseg train override for every run (repeatable; write --set=--data.spacing=null)")
    p.add_argument("--quick", action="store_true", help="tiny net and patch, 4 steps / 6 s: checks the pipeline")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.minutes = 4, 0.1
    for v in args.variants:
        variant_args(v)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    datalist, heldout = split(args)
    todo = [j for j in jobs(args, datalist, heldout) if not (Path(j["dir"]) / "result.json").is_file()]
    print(f"{len(jobs(args, datalist, heldout)) - len(todo)} runs done, {len(todo)} to run", flush=True)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the workers before torch loads
    failed = 0
    pool = ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn"), max_tasks_per_child=1)
    with pool:
        futures = {pool.submit(run_one, j): j for j in todo}
        for future in as_completed(futures):
            j = futures[future]
            try:
                r = future.result()
                print(f"{j['budget']:5} {j['variant']:22} seed {j['seed']}: {r['steps']} steps, "
                      f"{r['s_per_step']:.2f} s/step, Dice " + " ".join(f"{k} {v:.3f}" for k, v in r["dice"].items()),
                      flush=True)
            except Exception:
                failed += 1
                print(f"FAILED {j['dir']}:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
    write_report(Path(args.out))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
