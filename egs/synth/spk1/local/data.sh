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
# Synthetic corpus settings; empty: the generator's defaults.
n_train_speakers=
n_test_speakers=
utts_per_speaker=
test_utts_per_speaker=
n_trials=
seed=
. "$(dirname "$0")/parse_options.sh"

corpus_args=()
for name in n_train_speakers n_test_speakers utts_per_speaker test_utts_per_speaker n_trials seed; do
    if [ -n "${!name}" ]; then corpus_args+=("--${name}" "${!name}"); fi
done

if [ -z "${train_dir}" ] && [ -z "${test_dir}" ]; then
    ${python} -m espnet_plugin_intertopk.recipe.synthetic_corpus "${corpus_dir}" "${corpus_args[@]}"
    train_dir="${corpus_dir}/train"
    test_dir="${corpus_dir}/test"
elif [ -z "${train_dir}" ] || [ -z "${test_dir}" ]; then
    echo "$0: give both --train_dir and --test_dir (or neither, for the synthetic corpus)" >&2
    exit 1
fi

${python} -m espnet_plugin_intertopk.recipe.kaldi_data check train "${train_dir}"
${python} -m espnet_plugin_intertopk.recipe.kaldi_data check test "${test_dir}"
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
