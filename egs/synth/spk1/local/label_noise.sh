#!/usr/bin/env bash
# The label-noise experiment: per seed, train on the corpus with --label_noise (stage 3),
# clean it with the sub-centers (stage 8), retrain on the cleaned data from scratch and
# from the collapsed model (stage 9); then score the cleaned, noisy and clean-label
# models on the same test trials into RESULTS_<loss>_noise<f>_cleaned<T>.md (stage 10;
# T is run.sh's --clean_threshold), with the
# precision and recall of the flagged utterances against the corpus's noise truth.
# The clean-label reference is the ordinary run's model (exp/<loss>/seed<N>, from
# local/compare_losses.sh or run.sh without --label_noise; its test embeddings are
# reused).
#
#   local/label_noise.sh [--seeds "0 1 2"] [--jobs 2] [--label_noise 0.1] [run.sh options...]
set -euo pipefail
cd "$(dirname "$0")/.."
. local/job_pool.sh
seeds="0 1 2"
label_noise=0.1
while [ $# -gt 0 ]; do
    case "$1" in
        --seeds) seeds="$2"; shift 2 ;;
        --jobs) pool_jobs="$2"; shift 2 ;;
        --label_noise) label_noise="$2"; shift 2 ;;
        *) break ;;
    esac
done
noisy=(--label_noise "${label_noise}" --clean_init both)
./run.sh --stop_stage 2 "${noisy[@]}" "$@"
one_seed() {
    local seed="$1"; shift
    ./run.sh --stage 3 --stop_stage 3 --train_seed "${seed}" "$@"
    ./run.sh --stage 8 --stop_stage 10 --train_seed "${seed}" "$@"
}
mkdir -p exp
for seed in ${seeds}; do
    echo "label_noise: seed ${seed} -> exp/label_noise_seed${seed}.log"
    pool_run one_seed "${seed}" "${noisy[@]}" "$@" > "exp/label_noise_seed${seed}.log" 2>&1
done
pool_wait
first="${seeds%% *}"
./run.sh --stage 10 --stop_stage 10 --train_seed "${first}" --score_seeds "${seeds}" \
    --clean_reference aamsoftmax_sc_topk "${noisy[@]}" "$@"
