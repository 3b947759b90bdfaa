#!/usr/bin/env bash
# Stage 1 of the recipe: prepare <data>/train, valid, test and cohort (--data, default
# data). Input directories are only read; everything is written under <data>/, and a
# directory there is replaced only when kaldi_data's marker proves kaldi_data made it
# (a user's lists inside <data>/ are refused, never removed).
#
# Default: generate the built-in synthetic corpus (deterministic from its settings;
# a directory generated with other settings is refused). With --train_dir and
# --test_dir: a real corpus prepared in Kaldi style (for example VoxCeleb):
#   train: wav.scp, utt2spk, spk2utt            (category2utt is written into data/train)
#   valid, test: wav.scp, trial.scp, trial2.scp, trial_label (utt2spk: optional, for
#          speaker-level confidence intervals)
# where trial.scp / trial2.scp map a trial key "uttA*uttB" to the two wav paths and
# trial_label maps it to 1 (same speaker) or 0. Without --valid_dir, n_valid_speakers
# training speakers are held out as the validation set, with their own trials. Audio
# must be 16 kHz mono (kaldi_data check says how to convert other audio).
set -euo pipefail

python=python
train_dir=
valid_dir=
test_dir=
corpus_dir=downloads/synth
n_train_speakers=
n_valid_speakers=20
n_test_speakers=
utts_per_speaker=
valid_utts_per_speaker=
test_utts_per_speaker=
n_valid_trials=0       # 0: every pair of the held-out utterances
test_nontarget_ratio=
seed=0
cohort_utts_per_speaker=3
cohort_speakers=0      # the first this many training speakers (sorted names; 0: all)
label_noise=0
data=data
. "$(dirname "$0")/parse_options.sh"

kaldi_data() { ${python} -m espnet_plugin_intertopk.recipe.kaldi_data "$@"; }

if [ -z "${train_dir}" ] && [ -z "${test_dir}" ]; then
    inputs=(--corpus_dir "${corpus_dir}")
elif [ "${label_noise}" != 0 ]; then
    echo "$0: --label_noise is for the synthetic corpus, not for --train_dir" >&2
    exit 1
elif [ -z "${train_dir}" ] || [ -z "${test_dir}" ]; then
    echo "$0: give both --train_dir and --test_dir (or neither, for the synthetic corpus)" >&2
    exit 1
else
    inputs=(--train_dir "${train_dir}" --valid_dir "${valid_dir}" --test_dir "${test_dir}")
fi

# The user's lists must not be, contain or lie inside a directory this stage writes
# (e.g. --train_dir data/train): refused before anything is written. (kaldi_data also
# refuses to replace a directory it did not make, but only when it gets to it.)
overlaps() {
    local a b
    a="$(realpath -m "$1")" b="$(realpath -m "$2")"
    a="${a%/}/" b="${b%/}/"  # "/x/" is no prefix of "/xy/"; "/" stays "/"
    [[ "${a}" == "${b}"* || "${b}" == "${a}"* ]]
}
for out in train valid test cohort; do
    for ((i = 0; i < ${#inputs[@]}; i += 2)); do
        given="${inputs[i + 1]}"
        if [ -n "${given}" ] && overlaps "${given}" "${data}/${out}"; then
            echo "$0: ${inputs[i]} ${given} overlaps ${data}/${out}, which this stage" \
                 "writes: move your lists out of it, or give --data another directory" >&2
            exit 1
        fi
    done
done

if [ -z "${train_dir}" ]; then
    corpus_args=()
    for name in n_train_speakers n_valid_speakers n_test_speakers utts_per_speaker \
            valid_utts_per_speaker test_utts_per_speaker n_valid_trials \
            test_nontarget_ratio seed label_noise; do
        if [ -n "${!name}" ]; then corpus_args+=("--${name}" "${!name}"); fi
    done
    ${python} -m espnet_plugin_intertopk.recipe.synthetic_corpus "${corpus_dir}" "${corpus_args[@]}"
    train_dir="${corpus_dir}/train"
    valid_dir="${corpus_dir}/valid"
    test_dir="${corpus_dir}/test"
fi

kaldi_data check train "${train_dir}"
kaldi_data check test "${test_dir}"
if [ -n "${valid_dir}" ]; then
    kaldi_data check test "${valid_dir}"
    kaldi_data copy train "${train_dir}" "${data}/train"
    kaldi_data copy test "${valid_dir}" "${data}/valid"
else
    echo "$0: no --valid_dir: holding out ${n_valid_speakers} training speakers" \
         "(seed ${seed}) as the validation set, ${n_valid_trials} trials (0: every pair)"
    kaldi_data holdout "${train_dir}" "${data}/train" "${data}/valid" \
        --n_speakers "${n_valid_speakers}" --n_trials "${n_valid_trials}" --seed "${seed}"
fi
kaldi_data copy test "${test_dir}" "${data}/test"
kaldi_data cohort "${data}/train" "${data}/cohort" --per_speaker "${cohort_utts_per_speaker}" \
    --n_speakers "${cohort_speakers}"
speakers="$(kaldi_data speakers "${data}/train")"  # as ESPnet counts them
echo "$0: ${data}/train: $(wc -l < "${data}/train/wav.scp") utterances of" \
     "${speakers} speakers; ${data}/valid:" \
     "$(wc -l < "${data}/valid/trial_label") trials; ${data}/test:" \
     "$(wc -l < "${data}/test/trial_label") trials"
