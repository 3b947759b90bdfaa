#!/usr/bin/env bash
# The loss comparison: the plugin loss, ESPnet's own copy of it and ESPnet's AAM-softmax,
# each trained, fine-tuned (LM), embedded and scored on the same data, into one
# RESULTS.md table. Options go to every run.sh call (for example --python PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
./run.sh --stop_stage 2 "$@"
for loss in aamsoftmax_sc_topk aamsoftmax_sc_topk_espnet aamsoftmax; do
    ./run.sh --stage 3 --stop_stage 5 --loss "${loss}" "$@"
done
./run.sh --stage 6 --stop_stage 6 "$@"
