#!/usr/bin/env bash
# The recipe comparison of docs/robustness.md ("Held out: the int16 case"): the earlier bundled recipe (BASELINE=1)
# and the tumour-free-mirror recipe, each trained from scratch on the 5 DeepMedic BraTS 2013 cases with
# BraTS2021_00006 (the un-normalised int16 case, like BraTS Toolkit output) and brats_2013_pat0001_1 held out,
# seeds 0 and 1; then `medseg robustness` on both held-out cases without and with the FLAIR check + keep-largest, and
# the two recipes' ensemble of each seed with it, with and without keep-largest. Runs and JSON already there are kept.
# (The ho2 JSON came from runs named runs/e28/{base,mirror}-ho2 and -ho2-s1, the ho35 seed-0 JSON from
# runs/e28/{base,mirror}-ho35, with the same arguments; ho2n's mirror run is ho2's seed-0 one.)
#
#   experiments/brats_recipes_heldout.sh runs/e28                 # 4 trainings of ~22 min on one idle core each
#   SEEDS=0 TAG=ho35 EXTRA_BASE='--model.block_kwargs={"inner_act":true}' \
#     experiments/brats_recipes_heldout.sh runs/e28 brats_2013_pat0003_1 brats_2013_pat0005_1   # the second split
# The three splits of docs/robustness.md's out-of-fold table (seed 0, the earlier recipe with brats.pt's PmSCn):
#   TAG=ho2n (the default held-out pair), TAG=ho35 (as above), TAG=ho246 (pat0002, pat0004, pat0006); then
#   python experiments/brats_oof_table.py ho2n ho35 ho246
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:?usage: experiments/brats_recipes_heldout.sh WORK [HELDOUT CASE...]}; shift
OUT=experiments/robustness_results
if [ $# -gt 0 ]; then HELDOUT=("$@"); else HELDOUT=(BraTS2021_00006 brats_2013_pat0001_1); fi
TAG=${TAG:-ho2}
python -m medseg.data.conversion.brats "${SHARED:-../shared/data}" "$WORK/all.json" --heldout
for seed in ${SEEDS:-0 1}; do
  for recipe in base mirror; do
    run=$WORK/$recipe-$TAG-s$seed
    extra=$([ $recipe = base ] && echo "${EXTRA_BASE:-}" || true)
    [ -f "$run/run/checkpoints/last.ckpt" ] || BASELINE=$([ $recipe = base ] && echo 1 || echo 0) SEED=$seed \
      EXTRA_ARGS="$extra" tools/train_bundled_brats.sh "$run" "${HELDOUT[@]}"
    for pp in "none:--no-keep-largest --lesion-flair-z off" "flair-largest:--keep-largest --lesion-flair-z 1.0"; do
      out=$OUT/$TAG-$recipe-s$seed-${pp%%:*}.json
      # shellcheck disable=SC2086
      [ -f "$out" ] || medseg robustness --model "$run/run/checkpoints/last.ckpt" --datalist "$WORK/all.json" \
        --cases "${HELDOUT[@]}" --heldout "${HELDOUT[@]}" \
        --perturbations none "healthy hemisphere mirrored" "bias field 0.3" ${pp#*:} --output "$out"
    done
  done
  for pp in "flair-largest:--keep-largest --lesion-flair-z 1.0" "flair-only:--no-keep-largest --lesion-flair-z 1.0"; do
    out=$OUT/$TAG-ensemble-s$seed-${pp%%:*}.json
    # shellcheck disable=SC2086
    [ -f "$out" ] || medseg robustness --datalist "$WORK/all.json" --cases "${HELDOUT[@]}" --heldout "${HELDOUT[@]}" \
      --model "$WORK/base-$TAG-s$seed/run/checkpoints/last.ckpt,$WORK/mirror-$TAG-s$seed/run/checkpoints/last.ckpt" \
      --perturbations none "healthy hemisphere mirrored" "bias field 0.3" ${pp#*:} --output "$out"
  done
done
