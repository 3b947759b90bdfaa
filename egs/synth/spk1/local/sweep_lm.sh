#!/usr/bin/env bash
# The sweep behind the large-margin fine-tuning defaults, scored on the validation
# trials only: every loss's chosen stage-3 model (from local/sweep.sh) is fine-tuned
# with each LM setting (stage 4, into exp/sweep_lm_<loss>_<setting>/seed0), then the
# best validation EER of each run is tabulated. Every loss gets the same settings.
# Run local/sweep.sh first. Options go to every run.sh call.
#
#   local/sweep_lm.sh [--jobs 2] [run.sh options...]
set -euo pipefail
cd "$(dirname "$0")/.."
. local/job_pool.sh
if [ "${1:-}" = --jobs ]; then pool_jobs="$2"; shift 2; fi

# loss | its chosen stage-3 sweep run
bases=(
    "aamsoftmax_sc_topk|sweep_plugin_k10"
    "aamsoftmax_sc_topk_espnet|sweep_espnet_m0.3_s30"
    "aamsoftmax|sweep_aam_m0.2"
)
# name | LM margin | LM epochs
settings=("e3_m0.5|0.5|3" "e6_m0.5|0.5|6" "e3_m0.4|0.4|3" "e3_m0.6|0.6|3")

tune_one() {
    local loss="$1" base="$2" setting="$3"
    local name="${setting%%|*}" rest="${setting#*|}"
    local margin="${rest%%|*}" epochs="${rest#*|}"
    local tag="sweep_lm_${loss}_${name}"
    ./run.sh --stage 4 --stop_stage 4 --loss "${loss}" --tag "${base}" --lm_tag "${tag}" \
        --lm_margin "${margin}" --lm_args "--max_epoch ${epochs}" "${@:4}" \
        > "exp/${tag}.log" 2>&1 || echo "sweep_lm: ${tag} failed, see exp/${tag}.log"
}
runs=()
for b in "${bases[@]}"; do
    for s in "${settings[@]}"; do
        echo "sweep_lm: ${b%%|*} ${s%%|*}"
        runs+=("exp/sweep_lm_${b%%|*}_${s%%|*}/seed0")
        pool_run tune_one "${b%%|*}" "${b#*|}" "${s}" "$@"
    done
done
pool_wait
${pool_python} -m espnet_plugin_intertopk.recipe.validation_summary "${runs[@]}"
