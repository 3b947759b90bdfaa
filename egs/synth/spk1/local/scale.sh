#!/usr/bin/env bash
# The scale experiment: where the loss helps as the number of training speakers grows,
# and which of its parts does. One corpus of the largest scale's training speakers
# plus 40 validation and 40 test speakers (8 utterances each); the smaller scales train
# on its first N speakers (nested sets), so that every point shares the validation
# trials (checkpoint selection), the test trials and the AS-norm cohort (one utterance
# of each of the first 100 training speakers, in every scale's training set).
# Training: conf/scale/*.yaml (the recipe's defaults shrunk alike for every run; see
# their headers), 20 epochs whose steps grow with the speakers: at least 10 passes over
# the training data and 800 steps (iters_per_epoch below).
#
#   local/scale.sh [--jobs 2] [--seeds "0 1 2"] [--scales "1000 300 100"] \
#       [--parts "curve ablation grouped"] [--score_only true] [--corpus_speakers N]
#   local/scale.sh --seeds "0 1" --scales 1000 --parts "mechanism selection"
#
# --score_only true: no training or extraction, only the scoring of the parts and the
# curve's summary (RESULTS_scale.md, images/scale_curve.png).
# --corpus_speakers N: the corpus's training speakers (default: the largest scale), so
# that points run in separate sessions share one corpus: `--scales "300 100"
# --corpus_speakers 1000 --parts curve` trains on the 1,000-speaker corpus's first 300
# and 100 (the other parts would run at 1,000).
# The summary holds the scales of the call: score all of them at the end with
# `--scales "1000 300 100" --score_only true`.
#
# Parts (each run once per seed, side by side with --jobs):
#   curve     at each scale: the plugin (+ LM), ESPnet's copy, AAM-softmax (both + LM
#             at the largest scale) -> RESULTS_scale<N>.md (exp/scale<N>), and the
#             trainings' validation EER per epoch -> RESULTS_scale<N>_training.md
#   ablation  at the largest scale, one part of the plugin off at a time: K 1, k_top 0,
#             constant margin, k_top 5 (k_top 10 is the default); LM off is the curve's
#             plugin without its LM -> RESULTS_scale<N>_ablation.md
#   grouped   the curve's losses on a corpus whose speakers come in groups of 5 that
#             share one voice but for pitch and tract length, with half of the test's
#             non-target trials within groups (the validation list: every pair)
#             -> RESULTS_scale<N>_grouped.md (exp/scale<N>_grouped)
#   mechanism at the largest scale, trained only, with --training_diagnostics: the
#             plugin (also at the former 800-step budget), K 1, k_top 0, AAM-softmax,
#             ESPnet's copy under the plugin's margin schedule
#             -> RESULTS_scale<N>_mechanism.md/.json, images/scale<N>_mechanism.png
#   selection at the largest scale, trained only: the fixes tried against the stall
#             -> RESULTS_scale<N>_selection.md/.json, images/scale<N>_selection.png
# Each RESULTS file has a JSON twin (.json); the curve's are summarised into
# RESULTS_scale.md and images/scale_curve.png (recipe.scale_summary).
# Each training's wall time goes to exp/scale_walltime.tsv (not a rerun's, which only
# extracts again), its log to
# exp/scale<N>[_grouped]/<model>_seed<S>.log. Rerunning it resumes: a finished
# training run stays finished (its embeddings are extracted again).
set -euo pipefail
cd "$(dirname "$0")/.."
. local/job_pool.sh
seeds="0 1 2"
scales="1000 300 100"
parts="curve ablation grouped"
score_only=false
corpus_speakers=
while [ $# -gt 0 ]; do
    case "$1" in
        --score_only) score_only="$2"; shift 2 ;;
        --corpus_speakers) corpus_speakers="$2"; shift 2 ;;
        --seeds) seeds="$2"; shift 2 ;;
        --scales) scales="$2"; shift 2 ;;
        --parts) parts="$2"; shift 2 ;;
        --jobs) pool_jobs="$2"; shift 2 ;;
        *) echo "$0: unknown option '$1' (options: --jobs --seeds --scales --parts --score_only --corpus_speakers)" >&2
           exit 1 ;;
    esac
done
for part in ${parts}; do
    case "${part}" in curve|ablation|grouped|mechanism|selection) ;;
        *) echo "$0: --parts '${part}': must be curve, ablation, grouped, mechanism or selection" >&2; exit 1 ;;
    esac
done
[[ "${pool_jobs}" =~ ^[1-9][0-9]*$ ]] \
    || { echo "$0: --jobs '${pool_jobs}': must be a positive integer" >&2; exit 1; }
[[ "${seeds}" =~ ^[0-9]+( [0-9]+)*$ ]] \
    || { echo "$0: --seeds '${seeds}': must be integers separated by spaces" >&2; exit 1; }
case "${score_only}" in true|false) ;;
    *) echo "$0: --score_only '${score_only}': must be true or false" >&2; exit 1 ;;
esac
for n in ${scales}; do
    [[ "${n}" =~ ^[1-9][0-9]*$ ]] && [ "${n}" -ge 100 ] \
        || { echo "$0: --scales '${n}': scales are integers >= 100 (the cohort's 100 speakers)" >&2; exit 1; }
done
# The corpus's scale: the ablation, grouped, mechanism and selection parts run there,
# and the baselines get LM there.
largest="$(printf '%s\n' ${scales} | sort -n | tail -n 1)"
if [ -n "${corpus_speakers}" ]; then
    [[ "${corpus_speakers}" =~ ^[1-9][0-9]*$ ]] && [ "${corpus_speakers}" -ge "${largest}" ] \
        || { echo "$0: --corpus_speakers '${corpus_speakers}': must be an integer >= every scale (${largest})" >&2; exit 1; }
    largest="${corpus_speakers}"
fi
corpus_args=(--n_train_speakers "${largest}" --n_valid_speakers 40 --n_test_speakers 40
             --utts_per_speaker 8 --valid_utts_per_speaker 8 --test_utts_per_speaker 8)
grouped_args=(--group_size 5 --within_group_nontargets 0.5)
common=(--train_config conf/scale/train.yaml --lm_config conf/scale/train_lm.yaml
        --extract_num_eval 1 --cohort_speakers 100 --cohort_utts_per_speaker 1)

# Data of one point: $1 scale, $2 name suffix ("" or _grouped), $3... corpus options.
# Prints the run.sh options that select the point's data and experiment directory.
point_args() {
    echo --data "data_scale$1$2" --dump "dump_scale$1$2" --expdir "exp/scale$1$2"
}
prepare() {
    local n="$1" suffix="$2"; shift 2
    local corpus="downloads/scale${largest}${suffix}_seed0"
    ${pool_python} -m espnet_plugin_intertopk.recipe.synthetic_corpus "${corpus}" \
        "${corpus_args[@]}" "$@"
    ${pool_python} -m espnet_plugin_intertopk.recipe.kaldi_data subset "${corpus}/train" \
        "${corpus}_train${n}" --n_speakers "${n}"
    # shellcheck disable=SC2046
    ./run.sh --stop_stage 2 --train_dir "${corpus}_train${n}" --valid_dir "${corpus}/valid" \
        --test_dir "${corpus}/test" "${common[@]}" $(point_args "${n}" "${suffix}")
}

# Steps per epoch at scale $1: the 20 epochs of conf/scale/train.yaml make at least
# 10 passes over the training data (8 utterances per speaker, batches of 32) and at
# least 800 steps: 40 steps per epoch up to 320 speakers, 125 at 1,000, 250 at 2,000.
iters_per_epoch() {
    local iters=$(( (10 * $1 * 8 + 32 * 20 - 1) / (32 * 20) ))
    echo $(( iters > 40 ? iters : 40 ))
}
# conf/scale/train.yaml's learning-rate warm-up (the first 2 of the 20 epochs) at scale $1.
warmup() {
    local iters
    iters="$(iters_per_epoch "$1")"
    echo "--scheduler_conf warmup_steps=$((2 * iters)) --scheduler_conf steps_per_epoch=${iters}"
}
no_warmup="--scheduler_conf warmup_steps=1"

# One model: $1 scale, $2 suffix, $3 seed, $4 model name, $5 loss, $6 use_lm,
# $7 extra spk_train arguments; the rest go to run.sh.
train_one() {
    local n="$1" suffix="$2" seed="$3" tag="$4" loss="$5" lm="$6" extra="$7"
    shift 7
    local start trained_before=true run
    start="$(date +%s)"
    # A training that had finished (ESPnet writes the averaged model last) is only
    # extracted again: that time is not a training's, so it is not recorded.
    for run in "${tag}" $([ "${lm}" = true ] && echo "${tag}_lm"); do
        [ -e "exp/scale${n}${suffix}/${run}/seed${seed}/valid.eer.ave.pth" ] \
            || trained_before=false
    done
    # shellcheck disable=SC2046
    ./run.sh --stage 3 --stop_stage 5 "${common[@]}" $(point_args "${n}" "${suffix}") \
        --loss "${loss}" --tag "${tag}" --train_seed "${seed}" --use_lm "${lm}" \
        --train_args "--num_iters_per_epoch $(iters_per_epoch "${n}") $(warmup "${n}") ${extra}" \
        "$@" \
        > "exp/scale${n}${suffix}/${tag}_seed${seed}.log" 2>&1 \
        || { echo "scale: ${n}${suffix} ${tag} seed ${seed} failed," \
                  "see exp/scale${n}${suffix}/${tag}_seed${seed}.log"; return 1; }
    if [ "${trained_before}" = false ]; then
        printf '%s\t%s\t%s\t%s\n' "scale${n}${suffix}" "${tag}" "${seed}" \
            "$(( $(date +%s) - start ))" >> exp/scale_walltime.tsv
    fi
}

# The curve's three losses: name | loss | use_lm | extra arguments.
curve_models=(
    "aamsoftmax_sc_topk|aamsoftmax_sc_topk|true|"
    "aamsoftmax_sc_topk_espnet|aamsoftmax_sc_topk_espnet|false|"
    "aamsoftmax|aamsoftmax|false|"
)
# At the largest scale the baselines get large-margin fine-tuning too, so that the
# plugin's LM is compared with theirs there.
curve_models_largest=(
    "${curve_models[0]}"
    "aamsoftmax_sc_topk_espnet|aamsoftmax_sc_topk_espnet|true|"
    "aamsoftmax|aamsoftmax|true|"
)
grouped_models=("${curve_models[@]}")
ablation_models=(
    "ablation_K1|aamsoftmax_sc_topk|false|--loss_conf K=1"
    "ablation_k_top0|aamsoftmax_sc_topk|false|--loss_conf k_top=0"
    "ablation_constant_margin|aamsoftmax_sc_topk|false|--margin_scheduler none"
    "ablation_k_top5|aamsoftmax_sc_topk|false|--loss_conf k_top=5"
)
# The mechanism of the stall (docs/loss.md): per-step head statistics
# (--training_diagnostics) of the plugin, two of its ablations, AAM-softmax and
# ESPnet's copy driven by the same margin schedule and options as the plugin (its
# penalty then acts), trained only (no extraction); the plugin also at the former
# 800-step budget, where it stalled.
diag="--training_diagnostics true"
# The former defaults: no learning-rate warm-up.
mechanism_models=(
    "mech_plugin|aamsoftmax_sc_topk|false|${diag} ${no_warmup}"
    "mech_plugin_800steps|aamsoftmax_sc_topk|false|${diag} ${no_warmup} --num_iters_per_epoch 40 --scheduler_conf steps_per_epoch=40"
    "mech_K1|aamsoftmax_sc_topk|false|${diag} ${no_warmup} --loss_conf K=1"
    "mech_k_top0|aamsoftmax_sc_topk|false|${diag} ${no_warmup} --loss_conf k_top=0"
    "mech_aamsoftmax|aamsoftmax|false|${diag} ${no_warmup}"
    "mech_espnet_scheduled|aamsoftmax_sc_topk_espnet|false|${diag} ${no_warmup} --loss_conf scale=32 --loss_conf margin=0.2 --margin_scheduler exp"
)
# The fixes tried against the stall (chosen on the validation trials; docs/loss.md):
# sub-centers that start as copies of one draw, the learning-rate warm-up (now the
# default, so the other runs have it taken away: warmup_steps 1 gives conf/scale's
# former steplr schedule, halving every 6 epochs, to within one step), and both. AAM-softmax gets the
# warm-up too: a schedule that helps one loss must be given to the others.
selection_models=(
    "sel_plugin_shared|aamsoftmax_sc_topk|false|${diag} ${no_warmup} --loss_conf subcenter_init=shared"
    "sel_plugin_warmup|aamsoftmax_sc_topk|false|${diag}"
    "sel_plugin_shared_warmup|aamsoftmax_sc_topk|false|${diag} --loss_conf subcenter_init=shared"
    "sel_aamsoftmax_warmup|aamsoftmax|false|${diag}"
)
# $1 scale, $2 suffix, then model specs; ${queue_run_args[@]} go to run.sh.
queue_run_args=()
queue() {
    local n="$1" suffix="$2" spec seed; shift 2
    for seed in ${seeds}; do
        for spec in "$@"; do
            IFS='|' read -r tag loss lm extra <<< "${spec}"
            echo "scale: ${n}${suffix} ${tag} seed ${seed}"
            pool_run train_one "${n}" "${suffix}" "${seed}" "${tag}" "${loss}" "${lm}" \
                "${extra}" "${queue_run_args[@]}"
        done
    done
}
# $5: the model compared with every other (the bootstrap costs minutes per pair);
# $6...: more run.sh options.
score() {
    local n="$1" suffix="$2" results="$3" models="$4" references="$5"
    shift 5
    # shellcheck disable=SC2046
    ./run.sh --stage 6 --stop_stage 6 "${common[@]}" $(point_args "${n}" "${suffix}") \
        --score_seeds "${seeds}" --score_models "${models}" --results "${results}.md" \
        --score_json "${results}.json" \
        --score_references "${references}" "$@"
}

mkdir -p exp
has() { [[ " ${parts} " == *" $1 "* ]]; }
if [ "${score_only}" = false ]; then
    # The curve, the largest scale first; the other parts after it, at the corpus's scale.
    for n in $(printf '%s\n' ${scales} | sort -rn); do
        has curve || continue
        prepare "${n}" ""
        mkdir -p "exp/scale${n}"
        if [ "${n}" = "${largest}" ]; then
            queue "${n}" "" "${curve_models_largest[@]}"
        else
            queue "${n}" "" "${curve_models[@]}"
        fi
    done
    if has ablation; then
        prepare "${largest}" ""
        mkdir -p "exp/scale${largest}"
        # Its reference, the plugin (+ LM), is the curve's first model.
        if ! { has curve && [[ " ${scales} " == *" ${largest} "* ]]; }; then
            queue "${largest}" "" "${curve_models[0]}"
        fi
        queue "${largest}" "" "${ablation_models[@]}"
    fi
    # The mechanism's and the selection's runs: at the largest scale, trained only.
    for part in mechanism selection; do
        has "${part}" || continue
        prepare "${largest}" ""
        mkdir -p "exp/scale${largest}"
        queue_run_args=(--stop_stage 3)
        specs="${part}_models[@]"
        queue "${largest}" "" "${!specs}"
        queue_run_args=()
    done
    if has grouped; then
        prepare "${largest}" _grouped "${grouped_args[@]}"
        mkdir -p "exp/scale${largest}_grouped"
        queue "${largest}" _grouped "${grouped_models[@]}"
    fi
    pool_wait
fi

# Training curves (recipe/training_curves.py) of runs under exp/$1: $2 the output's
# name (RESULTS_$2.md and .json, images/$2.png), then the run names (globs); a run is
# labelled by its name less mech_/sel_.
curves() {
    local where="$1" out="$2" runs=() dir tag name seed
    shift 2
    for name in "$@"; do
        for seed in ${seeds}; do
            for dir in "exp/${where}/"${name}/seed"${seed}"; do
                [ -f "${dir}/train.log" ] || continue
                tag="$(basename "$(dirname "${dir}")")"
                tag="${tag#mech_}"
                runs+=(--run "${tag#sel_}/seed${seed}=${dir}")
            done
        done
    done
    if [ "${#runs[@]}" = 0 ]; then
        echo "scale: no training log under exp/${where} for RESULTS_${out}.md, skipped" >&2
        return
    fi
    mkdir -p images
    ${pool_python} -m espnet_plugin_intertopk.recipe.training_curves "${runs[@]}" \
        --out "RESULTS_${out}.md" --json "RESULTS_${out}.json" --plot "images/${out}.png"
}
if has mechanism; then curves "scale${largest}" "scale${largest}_mechanism" "mech_*"; fi
# The selection's references: the same defaults without a fix (the mechanism's runs).
if has selection; then
    curves "scale${largest}" "scale${largest}_selection" "sel_*" mech_plugin mech_aamsoftmax
fi

curve="aamsoftmax_sc_topk_lm aamsoftmax_sc_topk aamsoftmax_sc_topk_espnet aamsoftmax"
if has curve; then
    points=()
    for n in ${scales}; do
        models="${curve}"
        if [ "${n}" = "${largest}" ]; then
            models+=" aamsoftmax_sc_topk_espnet_lm aamsoftmax_lm"
        fi
        score "${n}" "" "RESULTS_scale${n}" "${models}" aamsoftmax_sc_topk_lm
        # How soon each training left chance level (the LM runs start from a trained
        # model): RESULTS_scale<N>_training.md.
        curves "scale${n}" "scale${n}_training" aamsoftmax_sc_topk aamsoftmax_sc_topk_espnet \
            aamsoftmax || echo "scale: RESULTS_scale${n}_training.md not written" >&2
        points+=(--point "${n}=RESULTS_scale${n}.json")
    done
    mkdir -p images
    ${pool_python} -m espnet_plugin_intertopk.recipe.scale_summary "${points[@]}" \
        --walltime exp/scale_walltime.tsv --out RESULTS_scale.md --plot images/scale_curve.png
fi
if has ablation; then
    score "${largest}" "" "RESULTS_scale${largest}_ablation" \
        "aamsoftmax_sc_topk ablation_K1 ablation_k_top0 ablation_constant_margin ablation_k_top5 aamsoftmax_sc_topk_lm" \
        aamsoftmax_sc_topk
fi
if has grouped; then
    score "${largest}" _grouped "RESULTS_scale${largest}_grouped" \
        "${curve}" aamsoftmax_sc_topk_lm \
        --floor false  # the MFCC floor of the grouped corpus: minutes, for one row
fi
