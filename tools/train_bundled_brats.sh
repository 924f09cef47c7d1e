#!/usr/bin/env bash
# Train the site-robust recipe (issue 28) from scratch, with held-out cases of your choice; EXPORT=1 exports it as the
# bundled ensemble's second member (brats-mirror.pt; `tools/bundle_model.py brats-mirror` is the same run).
#
#   tools/train_bundled_brats.sh WORK [HELDOUT...]   # e.g. runs/brats-ho2 BraTS2021_00006 brats_2013_pat0001_1
#   EXPORT=1 tools/train_bundled_brats.sh runs/brats-ho1 brats_2013_pat0001_1   # the bundled brats-mirror.pt
#
# Recipe: PmSCn UNet with deep supervision, FLAIR + T1ce, 2 mm, 64^3 patches, z-score over the brain; the `sites`
# augmentation (nnU-Net's set + bias field, per-channel brightness, inverted gamma); in HEALTHY=50 % of the draws
# the case's healthier hemisphere mirrored over the other one and z-scored again (a brain with little or no tumour,
# RandHealthyMirrord), 2 patches per step, 2 tumour-free-brain patch centres per tumour centre.
# BASELINE=1 trains the earlier bundled recipe instead (nnunet augmentation, no mirror), for the before/after table.
# Budget: STEPS=1000 steps, one validation at the end, THREADS=1 thread: about 22 min on an idle 2-core machine.
# EXTRA_ARGS: more `medseg train` overrides, e.g. EXTRA_ARGS='--model.block_kwargs={"inner_act":true}' (brats.pt's net).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:?usage: tools/train_bundled_brats.sh WORK [HELDOUT...]}; shift
SHARED=${SHARED:-../shared/data}
STEPS=${STEPS:-1000}
HEALTHY=${HEALTHY:-0.5}
THREADS=${THREADS:-1}
SEED=${SEED:-0}
if [ "${BASELINE:-0}" = 1 ]; then
  RECIPE=(--data.augmentation=nnunet)
else
  RECIPE=(--data.augmentation=sites --data.negatives=2 --data.samples_per_case=2 --data.healthy_mirror="$HEALTHY")
fi
mkdir -p "$WORK"
python -m medseg.data.conversion.brats "$SHARED" "$WORK/brats.json" --heldout "$@"
OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS python -m medseg.cli train --config configs/brats.yaml \
  --data.datalist="$WORK/brats.json" --data.modalities="[flair, t1ce]" --data.label_convention=brats2013 \
  --model.block=pmscn --model.deep_supervision=true "${RECIPE[@]}" \
  --data.steps_per_epoch="$STEPS" --trainer.max_steps="$STEPS" --trainer.max_epochs=-1 --seed_everything="$SEED" \
  --trainer.logger=false --trainer.default_root_dir="$WORK/run" ${EXTRA_ARGS:-}
if [ "${EXPORT:-0}" = 1 ]; then
  python tools/bundle_model.py brats-mirror --export-only "$WORK/run/checkpoints/last.ckpt"
fi
