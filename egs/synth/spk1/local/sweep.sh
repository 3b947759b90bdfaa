#!/usr/bin/env bash
# The sweep that chose the recipe's defaults, scored on the validation trials only:
# each setting is trained once (stage 3, --train_seed 0) into exp/sweep_<name>/seed0,
# then the best validation EER of each run is tabulated. Each loss is swept on its own
# main knobs: the plugin's schedule and penalty (7 settings), each baseline's margin x
# scale (7). LM settings: local/sweep_lm.sh. Options go to every run.sh call.
#
#   local/sweep.sh [--jobs 2] [run.sh options...]
set -euo pipefail
cd "$(dirname "$0")/.."
. local/job_pool.sh
if [ "${1:-}" = --jobs ]; then pool_jobs="$2"; shift 2; fi

# name | loss | extra spk_train arguments
settings=(
    "plugin_exp_3_13|aamsoftmax_sc_topk|--margin_scheduler_conf increase_start_epoch=3 --margin_scheduler_conf fix_start_epoch=13"
    "plugin_exp_6_11|aamsoftmax_sc_topk|--margin_scheduler_conf increase_start_epoch=6 --margin_scheduler_conf fix_start_epoch=11"
    "plugin_exp_1_5|aamsoftmax_sc_topk|--margin_scheduler_conf increase_start_epoch=1 --margin_scheduler_conf fix_start_epoch=5"
    "plugin_constant|aamsoftmax_sc_topk|--margin_scheduler none"
    "espnet_m0.2|aamsoftmax_sc_topk_espnet|--loss_conf margin=0.2 --loss_conf scale=32"
    "espnet_m0.3_s30|aamsoftmax_sc_topk_espnet|--loss_conf margin=0.3 --loss_conf scale=30"
    "aam_m0.2|aamsoftmax|--loss_conf margin=0.2 --loss_conf scale=32"
    "aam_m0.3_s30|aamsoftmax|--loss_conf margin=0.3 --loss_conf scale=30"
    # Second round (2026-11-29): the plugin's penalty (k_top 0 = off, 10; mp doubled)
    # at the chosen schedule, and each baseline's margin x scale grid completed.
    "plugin_k0|aamsoftmax_sc_topk|--loss_conf k_top=0"
    "plugin_k10|aamsoftmax_sc_topk|--loss_conf k_top=10"
    "plugin_mp0.12|aamsoftmax_sc_topk|--loss_conf mp=0.12"
    "espnet_m0.2_s30|aamsoftmax_sc_topk_espnet|--loss_conf margin=0.2 --loss_conf scale=30"
    "espnet_m0.3_s32|aamsoftmax_sc_topk_espnet|--loss_conf margin=0.3 --loss_conf scale=32"
    "espnet_m0.25|aamsoftmax_sc_topk_espnet|--loss_conf margin=0.25 --loss_conf scale=32"
    "aam_m0.2_s30|aamsoftmax|--loss_conf margin=0.2 --loss_conf scale=30"
    "aam_m0.3_s32|aamsoftmax|--loss_conf margin=0.3 --loss_conf scale=32"
    "aam_m0.25|aamsoftmax|--loss_conf margin=0.25 --loss_conf scale=32"
    # Third round: two more per baseline around its best, for the plugin's seven.
    "espnet_m0.35_s30|aamsoftmax_sc_topk_espnet|--loss_conf margin=0.35 --loss_conf scale=30"
    "espnet_m0.3_s28|aamsoftmax_sc_topk_espnet|--loss_conf margin=0.3 --loss_conf scale=28"
    "aam_m0.15|aamsoftmax|--loss_conf margin=0.15 --loss_conf scale=32"
    "aam_m0.2_s34|aamsoftmax|--loss_conf margin=0.2 --loss_conf scale=34"
)

./run.sh --stop_stage 2 "$@"
train_one() {
    local name="${1%%|*}" rest="${1#*|}"
    local loss="${rest%%|*}" extra="${rest#*|}"
    ./run.sh --stage 3 --stop_stage 3 --use_lm false --loss "${loss}" \
        --tag "sweep_${name}" --train_args "${extra}" "${@:2}" > "exp/sweep_${name}.log" 2>&1 \
        || echo "sweep: ${name} failed, see exp/sweep_${name}.log"
}
mkdir -p exp
for s in "${settings[@]}"; do
    echo "sweep: ${s%%|*}"
    pool_run train_one "${s}" "$@"
done
pool_wait
runs=()
for s in "${settings[@]}"; do runs+=("exp/sweep_${s%%|*}/seed0"); done
${pool_python} -m espnet_plugin_intertopk.recipe.validation_summary "${runs[@]}"
