# Sourced by the experiment scripts (sweeps, comparisons): run commands N at a time.
#   . local/job_pool.sh; pool_jobs=2
#   pool_run some_function args... > log 2>&1   # waits first while N are running
#   pool_wait                                   # all of them
# With pool_jobs > 1 each command runs in the background with one thread, so that
# N runs share the cores instead of each taking all of them.
pool_jobs=1
pool_running=0
pool_run() {
    if [ "${pool_jobs}" -le 1 ]; then "$@"; return; fi
    OMP_NUM_THREADS=1 "$@" &
    pool_running=$((pool_running + 1))
    if [ "${pool_running}" -ge "${pool_jobs}" ]; then
        wait -n
        pool_running=$((pool_running - 1))
    fi
}
pool_wait() {
    wait
    pool_running=0
}
# The project's .venv python when there is one (the recipe's own default).
pool_python="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)/.venv/bin/python"
[ -x "${pool_python}" ] || pool_python=python3
