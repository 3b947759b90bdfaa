#!/usr/bin/env bash
# A minimal stand-in for Kaldi's utils/run.pl, for the tests of ESPnet's recipe command
# lines: run.pl [--option value ...] [JOB=first:last] LOG COMMAND...
# Runs COMMAND once per job (JOB replaced by the job number in LOG and in every
# argument), the jobs side by side, each with its output in its LOG; fails if any fails.
set -u
while [[ $# -gt 0 && $1 == --* ]]; do
    shift 2  # --gpu N, --name NAME, --mem M, ...: nothing to schedule here
done
first=1 last=1 range=false
if [[ $1 =~ ^JOB=([0-9]+):([0-9]+)$ ]]; then
    first=${BASH_REMATCH[1]} last=${BASH_REMATCH[2]} range=true
    shift
fi
log=$1
shift
pids=()
for ((job = first; job <= last; job++)); do
    if ${range}; then
        args=("${@//JOB/${job}}") job_log=${log//JOB/${job}}
    else
        args=("$@") job_log=${log}
    fi
    mkdir -p "$(dirname "${job_log}")"
    {
        echo "# ${args[*]}"
        "${args[@]}"
        status=$?
        echo "# Ended (code ${status})"
        exit "${status}"
    } >"${job_log}" 2>&1 &
    pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do
    wait "${pid}" || failed=$((failed + 1))
done
if [[ ${failed} -gt 0 ]]; then
    echo "run.pl: ${failed} of $((last - first + 1)) jobs failed, see ${log}" >&2
    exit 1
fi
