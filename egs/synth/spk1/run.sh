#!/usr/bin/env bash
# Speaker verification with the sub-center inter-top-k AAM loss on ESPnet.
#
#   ./run.sh                                   # all stages, built-in synthetic corpus
#   ./run.sh --stage 3 --stop_stage 3          # one stage alone
#   ./run.sh --loss aamsoftmax_sc_topk_espnet  # ESPnet's own copy of the loss, for comparison
#   ./run.sh --train_dir /data/vox2_dev --test_dir /data/vox1_o --stage 1   # a real corpus
#
# Stages: 1 data  2 shape files  3 training  4 large-margin fine-tuning
#         5 embedding extraction (both models)  6 scoring -> RESULTS.md
# Every setting below can be overridden as --name value.
set -euo pipefail
cd "$(dirname "$0")"

stage=1
stop_stage=6
python=                # default: the project's .venv python when there is one
ngpu=0
loss=aamsoftmax_sc_topk  # aamsoftmax_sc_topk (plugin) | aamsoftmax_sc_topk_espnet | aamsoftmax
train_config=conf/train.yaml
lm_config=conf/train_lm.yaml
lm_margin=0.5
use_lm=true            # run stage 4 (and extract/score the LM model)
expdir=exp
tag=                   # experiment name (default: the loss name); the LM model is <tag>_lm
train_args=            # extra arguments for spk_train in stage 3
lm_args=               # extra arguments for spk_train in stage 4
extract_num_eval=5     # crops per test utterance in stage 5
extract_duration=3.0   # seconds per crop in stage 5
results=RESULTS.md
# Stage 1: a real corpus in Kaldi style (see local/data.sh), or the synthetic one.
train_dir=
test_dir=
corpus_dir=downloads/synth
n_train_speakers=100
n_test_speakers=20
utts_per_speaker=8
test_utts_per_speaker=10
n_trials=1800
seed=0

. local/parse_options.sh
if [ -z "${python}" ]; then
    venv="$(cd ../../.. && pwd)/.venv/bin/python"
    if [ -x "${venv}" ]; then python="${venv}"; else python=python3; fi
fi
log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (run.sh) $*"; }

# The comparison losses run exactly as plain ESPnet runs them: no margin scheduler
# (ESPnet has none), the margin given in loss_conf.
case "${loss}" in
    aamsoftmax_sc_topk)
        loss_args=(); lm_loss_args=(--loss_conf "margin=${lm_margin}" --margin_scheduler_conf "margin=${lm_margin}") ;;
    aamsoftmax_sc_topk_espnet)
        loss_args=(--loss "${loss}" --margin_scheduler none)
        lm_loss_args=(--loss "${loss}" --margin_scheduler none --loss_conf "margin=${lm_margin}") ;;
    aamsoftmax)
        loss_args=(--loss aamsoftmax --loss_conf "{margin: 0.2, scale: 32}" --margin_scheduler none)
        lm_loss_args=(--loss aamsoftmax --loss_conf "{margin: ${lm_margin}, scale: 32}" --margin_scheduler none) ;;
    *) echo "$0: --loss must be aamsoftmax_sc_topk, aamsoftmax_sc_topk_espnet or aamsoftmax" >&2; exit 1 ;;
esac
exp="${expdir}/${tag:-${loss}}"
exp_lm="${exp}_lm"
models=("${exp}")
if [ "${use_lm}" = true ]; then models+=("${exp_lm}"); fi

train_data_args() {
    echo --train_data_path_and_name_and_type data/train/wav.scp,speech,sound \
         --train_data_path_and_name_and_type data/train/utt2spk,spk_labels,text \
         --train_shape_file dump/train_shape \
         --valid_data_path_and_name_and_type data/test/trial.scp,speech,sound \
         --valid_data_path_and_name_and_type data/test/trial2.scp,speech2,sound \
         --valid_data_path_and_name_and_type data/test/trial_label,spk_labels,text \
         --valid_shape_file dump/valid_shape --fold_length 120000 \
         --spk2utt data/train/spk2utt --spk_num "$(wc -l < data/train/spk2utt)"
}

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
    log "stage 1: data preparation"
    local/data.sh --python "${python}" --train_dir "${train_dir}" --test_dir "${test_dir}" \
        --corpus_dir "${corpus_dir}" --n_train_speakers "${n_train_speakers}" \
        --n_test_speakers "${n_test_speakers}" --utts_per_speaker "${utts_per_speaker}" \
        --test_utts_per_speaker "${test_utts_per_speaker}" --n_trials "${n_trials}" --seed "${seed}"
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
    log "stage 2: shape files"
    mkdir -p dump
    ${python} -m espnet_plugin_intertopk.recipe.kaldi_data shape data/train/wav.scp dump/train_shape
    ${python} -m espnet_plugin_intertopk.recipe.kaldi_data shape data/test/trial.scp dump/valid_shape
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
    log "stage 3: training ${loss} -> ${exp} (log: ${exp}/train.log)"
    mkdir -p "${exp}"
    # shellcheck disable=SC2046,SC2086
    ${python} -m espnet_plugin_intertopk.bin.spk_train --config "${train_config}" \
        --ngpu "${ngpu}" --use_preprocessor true --resume true --output_dir "${exp}" \
        $(train_data_args) "${loss_args[@]}" ${train_args} > "${exp}/train.log" 2>&1 \
        || { tail -n 30 "${exp}/train.log"; exit 1; }
    grep "epoch results" "${exp}/train.log" | sed 's/^.*INFO: //' | cut -c1-220
fi

if [ "${use_lm}" = true ] && [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
    log "stage 4: large-margin fine-tuning from ${exp}/valid.eer.best.pth -> ${exp_lm}"
    mkdir -p "${exp_lm}"
    # shellcheck disable=SC2046,SC2086
    ${python} -m espnet_plugin_intertopk.bin.spk_train --config "${lm_config}" \
        --ngpu "${ngpu}" --use_preprocessor true --resume true --output_dir "${exp_lm}" \
        --init_param "${exp}/valid.eer.best.pth" \
        $(train_data_args) "${lm_loss_args[@]}" ${lm_args} > "${exp_lm}/train.log" 2>&1 \
        || { tail -n 30 "${exp_lm}/train.log"; exit 1; }
    grep "epoch results" "${exp_lm}/train.log" | sed 's/^.*INFO: //' | cut -c1-220
fi

if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
    for m in "${models[@]}"; do
        log "stage 5: embeddings of the test trials with ${m}/valid.eer.best.pth"
        mkdir -p "${m}/embed"
        ${python} -m espnet_plugin_intertopk.bin.spk_embed_extract \
            --spk_train_config "${m}/config.yaml" --spk_model_file "${m}/valid.eer.best.pth" \
            --output_dir "${m}/embed" --ngpu "${ngpu}" --num_eval "${extract_num_eval}" \
            --target_duration "${extract_duration}" \
            --data_path_and_name_and_type data/test/trial.scp,speech,sound \
            --data_path_and_name_and_type data/test/trial2.scp,speech2,sound \
            --data_path_and_name_and_type data/test/trial_label,spk_labels,text \
            --shape_file dump/valid_shape --fold_length 120000 \
            > "${m}/embed.log" 2>&1 || { tail -n 30 "${m}/embed.log"; exit 1; }
    done
fi

if [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 6 ]; then
    log "stage 6: scoring every model under ${expdir}/ -> ${results}"
    ${python} -m espnet_plugin_intertopk.recipe.scoring --trial_label data/test/trial_label \
        --results "${results}" "${expdir}"/*/embed/test_embeddings.npz
fi
log "done"
