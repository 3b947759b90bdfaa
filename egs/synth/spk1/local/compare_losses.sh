#!/usr/bin/env bash
# The loss comparison: the plugin loss, ESPnet's own copy of it and ESPnet's
# AAM-softmax, each trained once per seed (--seeds), fine-tuned (LM), embedded and
# scored on the same data into one RESULTS.md: mean ± std over seeds, the plugin's
# paired EER difference to each baseline with bootstrap intervals, and every seed.
# Other options go to every run.sh call (for example --python PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
seeds="0 1 2"
if [ "${1:-}" = --seeds ]; then seeds="$2"; shift 2; fi
./run.sh --stop_stage 2 "$@"
for seed in ${seeds}; do
    for loss in aamsoftmax_sc_topk aamsoftmax_sc_topk_espnet aamsoftmax; do
        ./run.sh --stage 3 --stop_stage 5 --loss "${loss}" --train_seed "${seed}" "$@"
    done
done
# The plugin with LM first: every other row is compared with it.
./run.sh --stage 6 --stop_stage 6 --score_seeds "${seeds}" \
    --score_models "aamsoftmax_sc_topk_lm aamsoftmax_sc_topk aamsoftmax_sc_topk_espnet aamsoftmax_sc_topk_espnet_lm aamsoftmax aamsoftmax_lm" "$@"
