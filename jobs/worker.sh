#!/bin/bash
# gridtrain worker job wrapper: runs in the job's scratch directory on the execute node.
#
#   worker.sh NAME INDEX
#
# Environment (from the submit description): GRIDTRAIN_PS_ADDRESS (HOST:PORT), GRIDTRAIN_VENV
# (the Python environment holding gridtrain), GRIDTRAIN_THREADS; GRIDTRAIN_JOB_COMMAND replaces
# the worker command (tests and no-op benchmarks). Transferred files: worker.json, ps.secret.
#
# Eviction: HTCondor sends SIGTERM; the wrapper forwards it to the worker (which checkpoints and
# exits 143) and exits 85, the submit description's checkpoint_exit_code, so HTCondor restarts
# the job rather than counting it as finished.
set -u
name=${1:?usage: worker.sh NAME INDEX}
index=${2:-0}
readonly EXIT_EVICTED=85

echo "gridtrain job: worker $name (index $index) on $(hostname) as $(id -un) in $PWD"
echo "gridtrain job: CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}" \
    "AssignedGPUs=${_CONDOR_AssignedGPUs-unset}"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader 2>&1 |
        sed 's/^/gridtrain job: GPU /'
fi

if [[ -n ${GRIDTRAIN_VENV:-} ]]; then
    export PATH="$GRIDTRAIN_VENV/bin:$PATH"
fi
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
[[ -f ps.secret ]] && chmod 600 ps.secret

if [[ -n ${GRIDTRAIN_JOB_COMMAND:-} ]]; then
    read -r -a command <<<"$GRIDTRAIN_JOB_COMMAND"
else
    command=(gridtrain worker --spec worker.json --address "${GRIDTRAIN_PS_ADDRESS:?not set}"
        --secret-file ps.secret --name "$name")
    [[ -n ${GRIDTRAIN_THREADS:-} ]] && command+=(--threads "$GRIDTRAIN_THREADS")
fi
echo "gridtrain job: running ${command[*]}"

evicted=0
child=
on_term() {
    evicted=1
    echo "gridtrain job: SIGTERM (eviction): stopping the worker" >&2
    [[ -n $child ]] && kill -TERM "$child" 2>/dev/null
}
trap on_term TERM INT

"${command[@]}" &
child=$!
# `wait` returns early when a trapped signal arrives; wait again until the worker has ended.
while true; do
    wait "$child"
    code=$?
    kill -0 "$child" 2>/dev/null || break
done

if ((evicted)); then
    echo "gridtrain job: worker exited $code after SIGTERM; exiting $EXIT_EVICTED (checkpoint)" >&2
    exit "$EXIT_EVICTED"
fi
echo "gridtrain job: worker exited $code"
exit "$code"
