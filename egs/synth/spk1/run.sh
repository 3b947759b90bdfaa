#!/usr/bin/env bash
# Speaker verification with the sub-center inter-top-k AAM loss on ESPnet.
#
#   ./run.sh                                   # all stages, built-in synthetic corpus
#   ./run.sh --stage 3 --stop_stage 3          # one stage alone
#   ./run.sh --loss aamsoftmax_sc_topk_espnet  # ESPnet's own copy of the loss, for comparison
#   ./run.sh --train_seed 1                    # another training seed (own exp dir)
#   ./run.sh --train_dir /data/vox2_dev --test_dir /data/vox1_o   # a real corpus
#
# Stages: 1 data (train / valid / test, disjoint speakers)  2 shape files
#         3 training (checkpoints selected on valid)  4 large-margin fine-tuning
#         5 test and cohort embeddings (both models)  6 scoring -> RESULTS.md
#         7 AS-norm calibrated with quality measures on the validation speakers' trials
#           -> RESULTS_calibrated.md (--calibrate none: skipped)
# Cleaning with the sub-centers (for label noise, e.g. --label_noise 0.1):
#         8 flag utterances far from their class's dominant sub-center, cleaned data
#         9 retrain on the cleaned data  10 test embeddings, scoring -> RESULTS_<name>_*.md
# Every setting below can be overridden as --name value.
set -euo pipefail
cd "$(dirname "$0")"

stage=1
stop_stage=7
python=                # default: the project's .venv python when there is one
ngpu=0
loss=aamsoftmax_sc_topk  # aamsoftmax_sc_topk (plugin) | aamsoftmax_sc_topk_espnet | aamsoftmax
train_config=conf/train.yaml
lm_config=conf/train_lm.yaml
lm_margin=0.5
use_lm=true            # run stage 4 (and extract/score the LM model)
expdir=exp
tag=                   # model name (default: the loss name); the LM model is <tag>_lm
lm_tag=                # LM model name instead of <tag>_lm (e.g. for an LM sweep)
train_seed=0           # ESPnet's --seed; models go to <expdir>/<name>/seed<train_seed>
train_args=            # extra arguments for spk_train in stage 3
lm_args=               # extra arguments for spk_train in stage 4
extract_num_eval=5     # crops per test utterance in stage 5
extract_duration=3.0   # seconds per crop in stage 5
# Stage 6: which models and seeds to score (default: this run's), how.
score_models=
score_seeds=
score_norm=asnorm      # asnorm (cosine and AS-norm rows) | none (cosine only)
top_n=50               # AS-norm: cohort speakers per side
cohort_utts_per_speaker=3  # training utterances per cohort speaker
cohort_speakers=0      # cohort: the first this many training speakers (sorted; 0: all)
bootstrap=1000         # resamples for the confidence intervals
floor=true             # add the untrained MFCC floor row
results=RESULTS.md
score_json=            # also write the scores as JSON there (for local/scale.sh's summary)
score_references=      # models compared with every other (default: the first scored)
# Stage 7: calibration of the AS-norm scores (a linear logistic model of the score and
# quality measures), fitted on other speakers' trials than the test's.
calibrate=valid        # valid: the validation speakers' trials | train: the cohort's
                       # training speakers' (the anchors' way) | both | none: skip
quality_measures="duration norm cohort"
calibration_results=RESULTS_calibrated.md
calibration_json=      # also write the calibrated results as JSON there
# Stages 8-10: cleaning with the sub-centers of the stage-3 model.
clean_threshold=55     # degrees to the dominant sub-center above which an utterance is
                       # dropped (chosen on the training data's noise truth, see README)
clean_init=collapsed   # continue from the stage-3 model with only its dominant sub-centers
                       # (K = 1) | scratch | both (chosen on the validation trials)
clean_reference=       # a model trained on clean labels (in expdir) to score beside
clean_results=         # default: RESULTS_<name>_cleaned<clean_threshold>.md
# Stage 1: a real corpus in Kaldi style (see local/data.sh), or the synthetic one.
train_dir=
valid_dir=             # default: hold out n_valid_speakers training speakers
test_dir=
corpus_dir=            # default: downloads/synth_seed<seed>[_noise<label_noise>]
label_noise=0          # synthetic corpus: fraction of training utterances labelled as
                       # another speaker (truth in <corpus_dir>/noise_truth, read by
                       # stage 8's evaluation only); data, dump and model names then
                       # get the suffix _noise<label_noise>
data=                  # default: data[_noise<label_noise>]
dump=                  # default: dump[_noise<label_noise>]
n_train_speakers=100
n_valid_speakers=20
n_test_speakers=20
utts_per_speaker=8
valid_utts_per_speaker=10
test_utts_per_speaker=10
n_valid_trials=0       # 0: every pair of the validation utterances (each is embedded
                       # once per epoch, so trials cost only a distance)
test_nontarget_ratio=2
seed=0                 # corpus seed

. local/parse_options.sh
if [ -z "${python}" ]; then
    venv="$(cd ../../.. && pwd)/.venv/bin/python"
    if [ -x "${venv}" ]; then python="${venv}"; else python=python3; fi
fi

# Every option is checked before any stage runs: a bad one gets one line and exit 1.
bad_option() { echo "$0: $*" >&2; exit 1; }
for name in stage stop_stage ngpu train_seed extract_num_eval top_n \
        cohort_utts_per_speaker cohort_speakers bootstrap n_train_speakers n_valid_speakers \
        n_test_speakers utts_per_speaker valid_utts_per_speaker test_utts_per_speaker \
        n_valid_trials seed; do
    [[ "${!name}" =~ ^[0-9]+$ ]] || bad_option "--${name} '${!name}': must be a non-negative integer"
done
for name in lm_margin extract_duration clean_threshold label_noise test_nontarget_ratio; do
    [[ "${!name}" =~ ^[0-9]+([.][0-9]+)?$ ]] \
        || bad_option "--${name} '${!name}': must be a non-negative number (e.g. 0.5)"
done
for name in extract_num_eval cohort_utts_per_speaker; do  # a later stage needs >= 1
    [ "${!name}" -ge 1 ] || bad_option "--${name} '${!name}': must be at least 1"
done
[[ "${extract_duration}" =~ ^0*([.]0*)?$ ]] \
    && bad_option "--extract_duration '${extract_duration}': must be above 0 (seconds)"
[[ "${score_seeds}" =~ ^[0-9\ ]*$ ]] \
    || bad_option "--score_seeds '${score_seeds}': must be integers separated by spaces"
for name in use_lm floor; do
    case "${!name}" in true|false) ;; *) bad_option "--${name} '${!name}': must be true or false" ;; esac
done
case "${loss}" in
    aamsoftmax_sc_topk|aamsoftmax_sc_topk_espnet|aamsoftmax) ;;
    *) bad_option "--loss '${loss}': must be aamsoftmax_sc_topk, aamsoftmax_sc_topk_espnet or aamsoftmax" ;;
esac
case "${score_norm}" in asnorm|none) ;; *) bad_option "--score_norm '${score_norm}': must be asnorm or none" ;; esac
case "${calibrate}" in
    valid|train|both) [ "${score_norm}" = asnorm ] || [ "${stop_stage}" -lt 7 ] || [ "${stage}" -gt 7 ] \
        || bad_option "--calibrate ${calibrate} calibrates AS-norm scores: give --score_norm asnorm or --calibrate none" ;;
    none) ;;
    *) bad_option "--calibrate '${calibrate}': must be valid, train, both or none" ;;
esac
case "${clean_init}" in
    scratch|collapsed|both) ;;
    *) bad_option "--clean_init '${clean_init}': must be scratch, collapsed or both" ;;
esac
for name in train_dir valid_dir test_dir; do
    if [ -n "${!name}" ] && [ ! -d "${!name}" ]; then
        bad_option "--${name} ${!name}: no such directory (relative paths start at $(pwd))"
    fi
done
configs=(train_config)
if [ "${use_lm}" = true ]; then configs+=(lm_config); fi
for name in "${configs[@]}"; do
    if [ ! -f "${!name}" ]; then
        bad_option "--${name} ${!name}: no such file (relative paths start at $(pwd))"
    fi
done
command -v "${python%% *}" > /dev/null || bad_option "--python ${python}: no such program"

suffix=
if [ "${label_noise}" != 0 ]; then suffix="_noise${label_noise}"; fi
data="${data:-data${suffix}}"
dump="${dump:-dump${suffix}}"
log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (run.sh) $*"; }

# The comparison losses run exactly as plain ESPnet runs them: no margin scheduler
# (ESPnet has none), the margin given in loss_conf.
case "${loss}" in
    aamsoftmax_sc_topk)
        loss_args=(); lm_loss_args=(--loss_conf "margin=${lm_margin}" --margin_scheduler_conf "margin=${lm_margin}") ;;
    aamsoftmax_sc_topk_espnet)
        # margin 0.3, scale 30 (ESPnet's VoxCeleb setting) won the validation sweep.
        loss_args=(--loss "${loss}" --margin_scheduler none --loss_conf margin=0.3 --loss_conf scale=30)
        lm_loss_args=(--loss "${loss}" --margin_scheduler none --loss_conf "margin=${lm_margin}" --loss_conf scale=30) ;;
    aamsoftmax)
        # margin 0.2, scale 32 won the validation sweep against margin 0.3, scale 30.
        loss_args=(--loss aamsoftmax --loss_conf "{margin: 0.2, scale: 32}" --margin_scheduler none)
        lm_loss_args=(--loss aamsoftmax --loss_conf "{margin: ${lm_margin}, scale: 32}" --margin_scheduler none) ;;
esac
name="${tag:-${loss}${suffix}}"
lm_name="${lm_tag:-${name}_lm}"
names=("${name}")
if [ "${use_lm}" = true ]; then names+=("${lm_name}"); fi
exp="${expdir}/${name}/seed${train_seed}"
exp_lm="${expdir}/${lm_name}/seed${train_seed}"
corpus_dir="${corpus_dir:-downloads/synth_seed${seed}${suffix}}"
clean_results="${clean_results:-RESULTS_${name}_cleaned${clean_threshold}.md}"

# Before any stage: every output against every input (the user's lists and the audio
# they name, the configs) and against each other, and the options a later stage
# would refuse only after earlier ones had rewritten their outputs.
checks=(--output data="${data}" --output dump="${dump}" --output expdir="${expdir}"
        --output results="${results}" --output score_json="${score_json}"
        --output clean_results="${clean_results}"
        --output calibration_results="${calibration_results}"
        --output calibration_json="${calibration_json}" --input train_dir="${train_dir}"
        --input valid_dir="${valid_dir}" --input test_dir="${test_dir}"
        --input train_config="${train_config}" --clean_threshold "${clean_threshold}"
        --cohort_speakers "${cohort_speakers}")
if [ "${use_lm}" = true ]; then checks+=(--input lm_config="${lm_config}"); fi
if [ -z "${train_dir}" ]; then
    checks+=(--output corpus_dir="${corpus_dir}")
else
    checks+=(--input corpus_dir="${corpus_dir}")
fi
if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
    if [ -z "${train_dir}" ]; then
        checks+=(--train_speakers "${n_train_speakers}")
    else
        checks+=(--train_spk2utt "${train_dir}/spk2utt")
        if [ -z "${valid_dir}" ]; then checks+=(--holdout "${n_valid_speakers}"); fi
    fi
else
    checks+=(--cohort_utt2spk "${data}/cohort/utt2spk")
fi
# AS-norm in stage 6, and in stage 7 (calibration of the AS-norm scores).
if { [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 6 ] && [ "${score_norm}" = asnorm ]; } \
    || { [ "${stage}" -le 7 ] && [ "${stop_stage}" -ge 7 ] && [ "${calibrate}" != none ]; }; then
    checks+=(--top_n "${top_n}")
fi
if [ "${stage}" -le 7 ] && [ "${stop_stage}" -ge 7 ] && [ "${calibrate}" != none ]; then
    checks+=(--quality_measures "${quality_measures}" --calibrate "${calibrate}"
             --cohort_utts_per_speaker "${cohort_utts_per_speaker}")
fi
${python} -m espnet_plugin_intertopk.recipe.preflight "${checks[@]}" || exit 1

# Validation trials (checkpoint selection) in stages 3, 4 and 8; the test trials are
# read in stages 5, 6 and 9 only. $1: training data directory, $2: its shape file,
# $3: its number of speakers (speakers_of; a failure inside $(...) would go unseen).
train_data_args() {
    local train="$1" shape="$2" spk_num="$3"
    echo --train_data_path_and_name_and_type "${train}/wav.scp,speech,sound" \
         --train_data_path_and_name_and_type "${train}/utt2spk,spk_labels,text" \
         --train_shape_file "${shape}" \
         --valid_data_path_and_name_and_type "${data}/valid/trial.scp,speech,sound" \
         --valid_data_path_and_name_and_type "${data}/valid/trial2.scp,speech2,sound" \
         --valid_data_path_and_name_and_type "${data}/valid/trial_label,spk_labels,text" \
         --valid_shape_file "${dump}/valid_shape" --fold_length 120000 \
         --spk2utt "${train}/spk2utt" --spk_num "${spk_num}" \
         --seed "${train_seed}"
}

# The speakers of data directory $1 as ESPnet counts them (spk2utt parsed, not its
# lines: a blank line or a missing final newline would miscount).
speakers_of() { ${python} -m espnet_plugin_intertopk.recipe.kaldi_data speakers "$1"; }

# spk_train into $1 with the remaining arguments; its log is appended to $1/train.log.
# --resume true continues an interrupted run; the plugin's task refuses to resume a
# run whose saved configuration or input lists differ from the requested ones.
train_into() {
    local out="$1"; shift
    mkdir -p "${out}"
    ${python} -m espnet_plugin_intertopk.bin.spk_train --ngpu "${ngpu}" \
        --use_preprocessor true --resume true --output_dir "${out}" "$@" \
        >> "${out}/train.log" 2>&1 || { tail -n 30 "${out}/train.log"; exit 1; }
    grep "epoch results" "${out}/train.log" | sed 's/^.*INFO: //' | cut -c1-220
}

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
    log "stage 1: data preparation"
    local/data.sh --python "${python}" --train_dir "${train_dir}" --valid_dir "${valid_dir}" \
        --test_dir "${test_dir}" --corpus_dir "${corpus_dir}" --data "${data}" \
        --n_train_speakers "${n_train_speakers}" --n_valid_speakers "${n_valid_speakers}" \
        --n_test_speakers "${n_test_speakers}" --utts_per_speaker "${utts_per_speaker}" \
        --valid_utts_per_speaker "${valid_utts_per_speaker}" \
        --test_utts_per_speaker "${test_utts_per_speaker}" --n_valid_trials "${n_valid_trials}" \
        --test_nontarget_ratio "${test_nontarget_ratio}" --seed "${seed}" \
        --cohort_utts_per_speaker "${cohort_utts_per_speaker}" \
        --cohort_speakers "${cohort_speakers}" --label_noise "${label_noise}"
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
    log "stage 2: shape files"
    mkdir -p "${dump}"
    ${python} -m espnet_plugin_intertopk.recipe.kaldi_data shape "${data}/train/wav.scp" "${dump}/train_shape"
    ${python} -m espnet_plugin_intertopk.recipe.kaldi_data shape "${data}/valid/trial.scp" "${dump}/valid_shape"
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
    log "stage 3: training ${loss} (seed ${train_seed}) -> ${exp} (log: ${exp}/train.log)"
    spk_num="$(speakers_of "${data}/train")"
    # shellcheck disable=SC2046,SC2086
    train_into "${exp}" --config "${train_config}" \
        $(train_data_args "${data}/train" "${dump}/train_shape" "${spk_num}") \
        "${loss_args[@]}" ${train_args}
fi

if [ "${use_lm}" = true ] && [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
    log "stage 4: large-margin fine-tuning from ${exp}/valid.eer.best.pth -> ${exp_lm}"
    spk_num="$(speakers_of "${data}/train")"
    # shellcheck disable=SC2046,SC2086
    train_into "${exp_lm}" --config "${lm_config}" --init_param "${exp}/valid.eer.best.pth" \
        $(train_data_args "${data}/train" "${dump}/train_shape" "${spk_num}") \
        "${lm_loss_args[@]}" ${lm_args}
fi

# Embeddings of ${data}/$2 with the model in $1 into $1/embed/$2_embeddings.npz (ESPnet
# writes partial files into its output directory, so each set gets its own first).
# Its scratch directory embed_<set> carries safe_io's ownership marker naming run.sh
# (bound to the directory: a copied marker proves nothing); only such a directory is
# removed.
ownership() { ${python} -m espnet_plugin_intertopk.safe_io.ownership "$@"; }
# ESPnet's extraction reads both sides of every trial it is given (each file about
# 2 x trials / utterances times); it is given each utterance once instead
# (kaldi_data utterances, in the scratch directory: ESPnet names its output
# <list directory>_embeddings.npz).
extract() {
    local m="$1" set="$2" scratch="$1/embed_$2"
    ownership remove "${scratch}" run.sh && ownership claim "${scratch}" run.sh || return 1
    mkdir -p "${m}/embed"
    { ${python} -m espnet_plugin_intertopk.recipe.kaldi_data utterances "${data}/${set}" \
          "${scratch}/utterances" \
      && ${python} -m espnet_plugin_intertopk.recipe.kaldi_data shape \
          "${scratch}/utterances/trial.scp" "${scratch}/utterances_shape" \
      && ${python} -m espnet_plugin_intertopk.bin.spk_embed_extract \
        --spk_train_config "${m}/config.yaml" --spk_model_file "${m}/valid.eer.best.pth" \
        --output_dir "${scratch}" --ngpu "${ngpu}" --num_eval "${extract_num_eval}" \
        --target_duration "${extract_duration}" \
        --data_path_and_name_and_type "${scratch}/utterances/trial.scp,speech,sound" \
        --data_path_and_name_and_type "${scratch}/utterances/trial2.scp,speech2,sound" \
        --data_path_and_name_and_type "${scratch}/utterances/trial_label,spk_labels,text" \
        --shape_file "${scratch}/utterances_shape" --fold_length 120000
    } > "${m}/embed_${set}.log" 2>&1 || { tail -n 30 "${m}/embed_${set}.log"; return 1; }
    mv "${scratch}/utterances_embeddings.npz" "${m}/embed/${set}_embeddings.npz"
    ownership remove "${scratch}" run.sh
}

if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
    sets=(test)
    if [ "${score_norm}" = asnorm ]; then sets+=(cohort); fi
    for n in "${names[@]}"; do
        m="${expdir}/${n}/seed${train_seed}"
        log "stage 5: ${sets[*]} embeddings with ${m}/valid.eer.best.pth (side by side)"
        pids=()
        for set in "${sets[@]}"; do
            extract "${m}" "${set}" &
            pids+=($!)
        done
        for pid in "${pids[@]}"; do wait "${pid}" || exit 1; done
    done
fi

if [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 6 ]; then
    models_to_score="${score_models:-${names[*]}}"
    log "stage 6: scoring ${models_to_score} (seeds ${score_seeds:-${train_seed}}) -> ${results}"
    score_args=()
    if [ -n "${score_json}" ]; then score_args+=(--json "${score_json}"); fi
    if [ -n "${score_references}" ]; then score_args+=(--references "${score_references}"); fi
    if [ "${floor}" = true ]; then
        ${python} -m espnet_plugin_intertopk.recipe.mfcc_floor --train_dir "${data}/train" \
            --test_dir "${data}/test" --out "${expdir}/mfcc_floor/test_embeddings.npz"
        score_args+=(--floor "${expdir}/mfcc_floor/test_embeddings.npz")
    fi
    ${python} -m espnet_plugin_intertopk.scoring.compare --expdir "${expdir}" \
        --models "${models_to_score}" --seeds "${score_seeds:-${train_seed}}" \
        --test_dir "${data}/test" --results "${results}" --score_norm "${score_norm}" \
        --cohort_utt2spk "${data}/cohort/utt2spk" --top_n "${top_n}" --bootstrap "${bootstrap}" \
        "${score_args[@]}"
fi

# Stage 7: the AS-norm scores of stage 6's models and seeds, calibrated on trials of
# other speakers than the test's (the validation speakers' by default), beside the
# uncalibrated ones, into their own results file. Validation embeddings are extracted
# here unless newer ones than the model's checkpoint exist.
if [ "${stage}" -le 7 ] && [ "${stop_stage}" -ge 7 ] && [ "${calibrate}" = none ]; then
    log "stage 7: skipped (--calibrate none)"
elif [ "${stage}" -le 7 ] && [ "${stop_stage}" -ge 7 ]; then
    models_to_score="${score_models:-${names[*]}}"
    seeds_to_score="${score_seeds:-${train_seed}}"
    if [ "${calibrate}" != train ]; then
        for n in ${models_to_score}; do
            for s in ${seeds_to_score}; do
                m="${expdir}/${n}/seed${s}"
                if [ "${m}/embed/valid_embeddings.npz" -nt "${m}/valid.eer.best.pth" ]; then continue; fi
                log "stage 7: validation embeddings with ${m}/valid.eer.best.pth"
                extract "${m}" valid
            done
        done
    fi
    log "stage 7: calibrating (${calibrate}) ${models_to_score} (seeds ${seeds_to_score}) -> ${calibration_results}"
    calibration_args=()
    if [ -n "${calibration_json}" ]; then calibration_args+=(--json "${calibration_json}"); fi
    if [ -n "${score_references}" ]; then calibration_args+=(--references "${score_references}"); fi
    ${python} -m espnet_plugin_intertopk.scoring.compare --expdir "${expdir}" \
        --models "${models_to_score}" --seeds "${seeds_to_score}" \
        --test_dir "${data}/test" --results "${calibration_results}" --score_norm asnorm \
        --cohort_utt2spk "${data}/cohort/utt2spk" --top_n "${top_n}" --bootstrap "${bootstrap}" \
        --calibrate "${calibrate}" --calibration_dir "${data}/valid" \
        --quality_measures "${quality_measures}" "${calibration_args[@]}"
fi
# Stages 8-10: the cleaning of the training data with the stage-3 model's sub-centers.
cleaning="${exp}/cleaning_th${clean_threshold}"
case "${clean_init}" in
    scratch) cleaned_names=("${name}_cleaned${clean_threshold}") ;;
    collapsed) cleaned_names=("${name}_cleaned${clean_threshold}_collapsed") ;;
    both) cleaned_names=("${name}_cleaned${clean_threshold}_collapsed" "${name}_cleaned${clean_threshold}") ;;
esac
# Precision and recall over these thresholds where the corpus knows its label noise.
eval_thresholds="45 50 52 54 55 56 58 60 62 65 70 75 80"

if [ "${stage}" -le 8 ] && [ "${stop_stage}" -ge 8 ]; then
    log "stage 8: cleaning ${data}/train with ${exp}/valid.eer.best.pth" \
        "(threshold ${clean_threshold} deg) -> ${cleaning}"
    collapse=false
    if [ "${clean_init}" != scratch ]; then collapse=true; fi
    # The cleaning tool owns its output directory (what it may replace there is its
    # call): the recipe removes nothing in it and logs beside it.
    ${python} -m espnet_plugin_intertopk.bin.spk_subcenter_clean \
        --spk_train_config "${exp}/config.yaml" --spk_model_file "${exp}/valid.eer.best.pth" \
        --data_dir "${data}/train" --output_dir "${cleaning}" --ngpu "${ngpu}" \
        --threshold_deg "${clean_threshold}" --collapse "${collapse}" \
        > "${cleaning}.log" 2>&1 || { tail -n 30 "${cleaning}.log"; exit 1; }
    grep "kept" "${cleaning}.log" | sed 's/^.*INFO: //'
    ${python} -m espnet_plugin_intertopk.recipe.kaldi_data shape "${cleaning}/data/wav.scp" \
        "${cleaning}/train_shape"
    if [ -f "${corpus_dir}/noise_truth" ]; then
        # shellcheck disable=SC2086
        ${python} -m espnet_plugin_intertopk.cleaning.evaluation "${cleaning}/report.tsv" \
            "${corpus_dir}/noise_truth" --thresholds ${eval_thresholds} "${clean_threshold}" \
            | tee "${cleaning}/evaluation.md"
    fi
fi

if [ "${stage}" -le 9 ] && [ "${stop_stage}" -ge 9 ]; then
    spk_num="$(speakers_of "${cleaning}/data")"
    for n in "${cleaned_names[@]}"; do
        m="${expdir}/${n}/seed${train_seed}"
        init_args=()
        if [[ "${n}" == *_collapsed ]]; then
            init_args=(--init_param "${cleaning}/collapsed/model.pth" --loss_conf K=1)
        fi
        log "stage 9: training ${loss} on ${cleaning}/data ${init_args[*]} -> ${m}"
        # shellcheck disable=SC2046,SC2086
        train_into "${m}" --config "${train_config}" \
            $(train_data_args "${cleaning}/data" "${cleaning}/train_shape" "${spk_num}") \
            "${loss_args[@]}" "${init_args[@]}" ${train_args}
    done
fi

if [ "${stage}" -le 10 ] && [ "${stop_stage}" -ge 10 ]; then
    # Test embeddings of each model unless newer ones than its checkpoint exist
    # (stage 5 makes the stage-3 model's).
    for n in "${cleaned_names[@]}" "${name}"; do
        m="${expdir}/${n}/seed${train_seed}"
        if [ "${m}/embed/test_embeddings.npz" -nt "${m}/valid.eer.best.pth" ]; then continue; fi
        log "stage 10: test embeddings with ${m}/valid.eer.best.pth"
        extract "${m}" test
    done
    seeds_to_score="${score_seeds:-${train_seed}}"
    models_to_score="${cleaned_names[*]} ${name} ${clean_reference}"
    log "stage 10: scoring ${models_to_score} (seeds ${seeds_to_score}) -> ${clean_results}"
    section="${expdir}/${name}/cleaning_th${clean_threshold}_evaluation.md"
    : > "${section}"
    for s in ${seeds_to_score}; do
        e="${expdir}/${name}/seed${s}/cleaning_th${clean_threshold}/evaluation.md"
        if [ -f "${e}" ]; then
            printf '### Flagged training utterances, seed %s (threshold %s deg)\n\n' \
                "${s}" "${clean_threshold}" >> "${section}"
            cat "${e}" >> "${section}"
            echo >> "${section}"
        fi
    done
    ${python} -m espnet_plugin_intertopk.scoring.compare --expdir "${expdir}" \
        --models "${models_to_score}" --seeds "${seeds_to_score}" \
        --test_dir "${data}/test" --results "${clean_results}" --score_norm none \
        --bootstrap "${bootstrap}" --append "${section}"
fi
log "done"
