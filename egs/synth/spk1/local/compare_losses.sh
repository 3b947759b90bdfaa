#!/usr/bin/env bash
# The loss comparison: the plugin loss, ESPnet's own copy of it and ESPnet's
# AAM-softmax, each trained once per seed, fine-tuned (LM), embedded and scored on the
# same data into one RESULTS.md: mean ± std over seeds, the plugin's paired EER
# difference to each baseline with bootstrap intervals, and every seed; then their
# AS-norm scores calibrated (stage 7) on the validation speakers' trials and, for
# comparison, on the training speakers' (the cohort's) trials -> RESULTS_calibrated.md.
#
#   local/compare_losses.sh [--seeds "0 1 2"] [--jobs 2] [run.sh options...]
#
# --jobs N trains N seeds side by side (one thread each). Logs: exp/compare_seed<N>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
. local/job_pool.sh
seeds="0 1 2"
while [ $# -gt 0 ]; do
    case "$1" in
        --seeds) seeds="$2"; shift 2 ;;
        --jobs) pool_jobs="$2"; shift 2 ;;
        *) break ;;
    esac
done
./run.sh --stop_stage 2 "$@"
one_seed() {
    local seed="$1"; shift
    for loss in aamsoftmax_sc_topk aamsoftmax_sc_topk_espnet aamsoftmax; do
        ./run.sh --stage 3 --stop_stage 5 --loss "${loss}" --train_seed "${seed}" "$@"
    done
}
mkdir -p exp
for seed in ${seeds}; do
    echo "compare_losses: seed ${seed} -> exp/compare_seed${seed}.log"
    pool_run one_seed "${seed}" "$@" > "exp/compare_seed${seed}.log" 2>&1
done
pool_wait
# Stage 7 calibrates AS-norm scores: not when the comparison is scored without AS-norm
# (the last --score_norm given; run.sh's default is asnorm).
score_norm=asnorm
previous=
for arg in "$@"; do
    if [ "${previous}" = --score_norm ]; then score_norm="${arg}"; fi
    previous="${arg}"
done
if [ "${score_norm}" = asnorm ]; then last_stage=7; else last_stage=6; fi
# The plugin with LM first: every other row is compared with it.
./run.sh --stage 6 --stop_stage "${last_stage}" --calibrate both --score_seeds "${seeds}" \
    --score_models "aamsoftmax_sc_topk_lm aamsoftmax_sc_topk aamsoftmax_sc_topk_espnet aamsoftmax_sc_topk_espnet_lm aamsoftmax aamsoftmax_lm" "$@"
