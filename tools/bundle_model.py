"""Train a bundled model with its recorded recipe and export it into medseg/models/ (what ships in the package).

    python tools/bundle_model.py brats --shared ../shared/data --work runs/bundled
    python tools/bundle_model.py em-membrane --shared ../shared/data --work runs/bundled
    python tools/bundle_model.py brats --export-only runs/bundled/brats/checkpoints/last.ckpt

Training is `medseg train` with a fixed step budget and seed; the exported file is the LAST checkpoint (never
chosen by the held-out cases, which training only monitors) reduced to what prediction needs: the plan and the
network weights, loadable with weights_only=True. Same command, same data, same torch build: the same weights, up to
the non-determinism of the hardware's float kernels.
"""

import argparse
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import torch

from medseg.models.loading import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "medseg" / "models"

RECIPES = {
    "brats": {
        "prepare": ["-m", "medseg.data.conversion.brats", "{shared}", "{work}/brats.json",
                    "--heldout", "brats_2013_pat0001_1"],
        "train": ["--config", "configs/brats.yaml", "--data.datalist={work}/brats.json",
                  "--data.modalities=[flair, t1ce]", "--data.label_convention=brats2013", "--data.augmentation=nnunet",
                  "--model.block=pmscn", "--model.deep_supervision=true",
                  "--data.steps_per_epoch=200", "--trainer.max_steps=1000", "--trainer.max_epochs=-1",
                  "--seed_everything=0"],
        # postprocessing stored with the model, decided on held-out predictions (README: "Keep the largest lesion")
        "plan": {"keep_largest": True},
    },
    "em-membrane": {
        "prepare": ["-m", "medseg.data.conversion.isbi2012", "{shared}/isbi2012_em", "{work}/isbi2012"],
        "train": ["--config", "configs/em_isbi.yaml", "--data.datalist={work}/isbi2012/datalist.json",
                  "--trainer.max_steps=400", "--trainer.max_epochs=-1", "--seed_everything=0"],
    },
}


def export(ckpt: Path, name: str) -> Path:
    """Keep the plan (with the recipe's postprocessing) and the network weights of a training checkpoint; drop
    optimizer and loop state."""
    plan, state = load_checkpoint(ckpt)
    plan = replace(plan, **RECIPES[name].get("plan", {}))
    out = MODELS / f"{name}.pt"
    torch.save({"medseg": plan.to_dict(), "state_dict": {f"net.{k}": v for k, v in state.items()}}, out)
    print(f"{out}: {out.stat().st_size / 2**20:.1f} MiB ({sum(v.numel() for v in state.values()):,} weights)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bundled")
    parser.add_argument("--export-only", type=Path, metavar="CKPT", help="export this checkpoint, do not train")
    args = parser.parse_args()
    if args.export_only:
        export(args.export_only, args.name)
        return
    recipe, run = RECIPES[args.name], args.work / args.name
    fill = lambda argv: [a.format(shared=args.shared.resolve(), work=args.work.resolve()) for a in argv]  # noqa: E731
    args.work.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, *fill(recipe["prepare"])], cwd=REPO, check=True)
    subprocess.run([sys.executable, "-m", "medseg.cli", "train", *fill(recipe["train"]), "--trainer.logger=false",
                    f"--trainer.default_root_dir={run.resolve()}"], cwd=REPO, check=True)
    export(run / "checkpoints" / "last.ckpt", args.name)


if __name__ == "__main__":
    main()
