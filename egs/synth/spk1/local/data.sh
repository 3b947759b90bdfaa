#!/usr/bin/env bash
# Stage 1 of the recipe: prepare data/train and data/test.
#
# Default: generate the built-in synthetic corpus (deterministic from --seed, skipped when
# it already exists). With --train_dir and --test_dir: use a real corpus prepared in
# Kaldi style (for example VoxCeleb). Expected files:
#   train: wav.scp, utt2spk, spk2utt            (category2utt is made from spk2utt)
#   test:  wav.scp, trial.scp, trial2.scp, trial_label
# where trial.scp / trial2.scp map a trial key "uttA*uttB" to the two wav paths and
# trial_label maps it to 1 (same speaker) or 0.
set -euo pipefail

python=python
train_dir=
test_dir=
corpus_dir=downloads/synth
n_train_speakers=100
n_test_speakers=20
utts_per_speaker=8
test_utts_per_speaker=10
n_trials=1800
seed=0

while [ $# -gt 0 ]; do
    case "$1" in
        --*) name="${1#--}"; [ $# -ge 2 ] || { echo "$0: $1 needs a value" >&2; exit 1; }
             declare -p "${name}" >/dev/null 2>&1 || { echo "$0: unknown option $1" >&2; exit 1; }
             printf -v "${name}" '%s' "$2"; shift 2 ;;
        *) echo "$0: unexpected argument $1" >&2; exit 1 ;;
    esac
done

if [ -z "${train_dir}" ] && [ -z "${test_dir}" ]; then
    ${python} -m espnet_plugin_intertopk.synthetic_corpus "${corpus_dir}" \
        --n_train_speakers "${n_train_speakers}" --n_test_speakers "${n_test_speakers}" \
        --utts_per_speaker "${utts_per_speaker}" --test_utts_per_speaker "${test_utts_per_speaker}" \
        --n_trials "${n_trials}" --seed "${seed}"
    train_dir="${corpus_dir}/train"
    test_dir="${corpus_dir}/test"
elif [ -z "${train_dir}" ] || [ -z "${test_dir}" ]; then
    echo "$0: give both --train_dir and --test_dir (or neither, for the synthetic corpus)" >&2
    exit 1
fi

${python} -m espnet_plugin_intertopk.kaldi_data check train "${train_dir}"
${python} -m espnet_plugin_intertopk.kaldi_data check test "${test_dir}"
mkdir -p data
for pair in "train:${train_dir}" "test:${test_dir}"; do
    name="${pair%%:*}"; src="${pair#*:}"
    rm -rf "data/${name}"
    mkdir -p "data/${name}"
    for f in "${src}"/*; do
        [ -f "${f}" ] && cp "${f}" "data/${name}/"
    done
done
echo "$0: data/train has $(wc -l < data/train/wav.scp) utterances of $(wc -l < data/train/spk2utt) speakers;" \
     "data/test has $(wc -l < data/test/trial_label) trials"
