"""Train a bundled model with its recorded recipe and export it into medseg/models/ (what ships in the package).

    python tools/bundle_model.py brats --shared ../shared/data --work runs/bundled          # brats.pt
    python tools/bundle_model.py brats-mirror --shared ../shared/data --work runs/bundled   # brats-mirror.pt
    python tools/bundle_model.py em-membrane --shared ../shared/data --work runs/bundled
    python tools/bundle_model.py em-neurons --shared ../shared/data --work runs/bundled
    python tools/bundle_model.py brats --export-only runs/bundled/brats/checkpoints/last.ckpt

Training is `medseg train` with a fixed step budget and seed; the exported file is the LAST checkpoint (never
chosen by the held-out cases, which training only monitors) reduced to what prediction needs: the plan and the
network weights, loadable with weights_only=True. em-neurons instead exports best.ckpt, chosen (with its decoding)
on a validation half-crop, so that its card's numbers come from the other half, which nothing was chosen on; its
weights are stored as float16 (prediction reads them back as float32).
Same command, same data, same torch build: the same weights, up to
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
    "brats": {  # the bundled ensemble's first member: the earlier bundled network (PmSCn as before format 3)
        "prepare": ["-m", "medseg.data.conversion.brats", "{shared}", "{work}/brats.json",
                    "--heldout", "brats_2013_pat0001_1"],
        "train": ["--config", "configs/brats.yaml", "--data.datalist={work}/brats.json",
                  "--data.modalities=[flair, t1ce]", "--data.label_convention=brats2013", "--data.augmentation=nnunet",
                  "--model.block=pmscn", "--model.block_kwargs={inner_act: true}", "--model.deep_supervision=true",
                  "--data.steps_per_epoch=200", "--trainer.max_steps=1000", "--trainer.max_epochs=-1",
                  "--seed_everything=0"],
        # postprocessing stored with the model, decided on held-out predictions (docs/robustness.md): FLAIR-dark
        # edema and FLAIR-normal lesions dropped, then the largest lesion kept
        "plan": {"keep_largest": True, "lesion_flair_z": 1.0},
    },
    "brats-mirror": {  # its second member: the site-robust recipe (tools/train_bundled_brats.sh runs its variants)
        "prepare": ["-m", "medseg.data.conversion.brats", "{shared}", "{work}/brats.json",
                    "--heldout", "brats_2013_pat0001_1"],
        "train": ["--config", "configs/brats.yaml", "--data.datalist={work}/brats.json",
                  "--data.modalities=[flair, t1ce]", "--data.label_convention=brats2013", "--data.augmentation=sites",
                  "--data.negatives=2", "--data.samples_per_case=2", "--data.healthy_mirror=0.5",
                  "--model.block=pmscn", "--model.deep_supervision=true",
                  "--data.steps_per_epoch=1000", "--trainer.max_steps=1000", "--trainer.max_epochs=-1",
                  "--seed_everything=0"],
        "plan": {"keep_largest": True, "lesion_flair_z": 1.0},
    },
    "em-membrane": {
        "prepare": ["-m", "medseg.data.conversion.isbi2012", "{shared}/isbi2012_em", "{work}/isbi2012"],
        "train": ["--config", "configs/em_isbi.yaml", "--data.datalist={work}/isbi2012/datalist.json",
                  "--trainer.max_steps=400", "--trainer.max_epochs=-1", "--seed_everything=0"],
    },
    "em-neurons": {  # train on train-*, select checkpoint and decoding on test-* x < 100, report test-* x >= 100
        "prepare": ["-m", "medseg.data.conversion.fibsem", "{shared}/gala_fibsem_em", "{work}/fibsem"],
        "train": ["--config", "configs/em_fibsem.yaml", "--data.datalist={work}/fibsem/train2test.json",
                  "--trainer.max_time=00:00:25:00", "--seed_everything=42"],
        "checkpoint": "best.ckpt",
        "half": True,
    },
}


def export(ckpt: Path, name: str) -> Path:
    """Keep the plan (with the recipe's postprocessing) and the network weights of a training checkpoint; drop
    optimizer and loop state."""
    plan, state = load_checkpoint(ckpt)
    plan = replace(plan, **RECIPES[name].get("plan", {}))
    out = MODELS / f"{name}.pt"
    half = RECIPES[name].get("half", False)
    state = {f"net.{k}": v.half() if half and v.is_floating_point() else v for k, v in state.items()}
    torch.save({"medseg": plan.to_dict(), "state_dict": state}, out)
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
    export(run / "checkpoints" / recipe.get("checkpoint", "last.ckpt"), args.name)


if __name__ == "__main__":
    main()
