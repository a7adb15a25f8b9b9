#!/bin/bash
# gridtrain worker job wrapper: runs in the job's scratch directory on the execute node.
#
#   worker.sh NAME INDEX [-- COMMAND ARG...]
#
# With `-- COMMAND`, that command runs instead of the worker, in the same prepared environment
# and under the same exit-code and eviction rules (GRIDTRAIN_PYTHON names the environment's
# Python): a probe of what a site gives a job, and how the tests and the submission benchmark run
# the real wrapper without training. It is part of the job's arguments, so `condor_q -l` shows it;
# nothing in the job's environment can change what runs.
#
# Environment (from the submit description): GRIDTRAIN_PS_ADDRESS (HOST:PORT), GRIDTRAIN_THREADS,
# and the Python environment chosen by the profile (gridtrain.condor.environment):
#   GRIDTRAIN_ENV       host | lcg | container | packed
#   GRIDTRAIN_ENV_PATH  host: the environment's prefix (same path as on the submit host);
#                       lcg: the LCG view's folder (its setup.sh is sourced);
#                       packed: the transferred tarball (gridtrain pack-env, or conda-pack)
#   GRIDTRAIN_WHEELS    transferred wheels (the gridtrain wheel, extra packages), comma separated:
#                       unpacked into .gridtrain-lib/, which goes first on PYTHONPATH
# Transferred: worker.json, ps.secret.
#
# Exit codes: the worker's own; 85 after SIGTERM (eviction): the worker checkpoints, and 85 is
# the submit description's checkpoint_exit_code, so HTCondor restarts the job rather than
# counting it as finished; 86 when the environment is missing or broken on this node (no /cvmfs,
# no setup.sh, a tarball that does not unpack, an image without gridtrain).
set -u
name=${1:?usage: worker.sh NAME INDEX [-- COMMAND ARG...]}
index=${2:-0}
shift $(($# < 2 ? $# : 2))
command=()
if (($#)); then
    [[ $1 == -- && -n ${2:-} ]] || { echo "usage: worker.sh NAME INDEX [-- COMMAND ARG...]" >&2; exit 2; }
    shift
    command=("$@")
fi
readonly EXIT_EVICTED=85 EXIT_NO_ENVIRONMENT=86

echo "gridtrain job: worker $name (index $index) on $(hostname) as $(id -un) in $PWD"
echo "gridtrain job: CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}" \
    "AssignedGPUs=${_CONDOR_AssignedGPUs-unset}"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader 2>&1 |
        sed 's/^/gridtrain job: GPU /'
fi

no_environment() {
    echo "gridtrain job: environment ${GRIDTRAIN_ENV:-host} unusable on $(hostname): $*" >&2
    exit "$EXIT_NO_ENVIRONMENT"
}

# Wheels are zip files: unpacked with the environment's own Python, no pip needed.
unpack_wheels() {
    [[ -n ${GRIDTRAIN_WHEELS:-} ]] || return 0
    local wheels
    IFS=, read -r -a wheels <<<"$GRIDTRAIN_WHEELS"
    "$python" -c 'import sys, zipfile
for wheel in sys.argv[2:]:
    zipfile.ZipFile(wheel).extractall(sys.argv[1])' .gridtrain-lib "${wheels[@]}" ||
        no_environment "cannot unpack ${wheels[*]} with $python"
    export PYTHONPATH="$PWD/.gridtrain-lib${PYTHONPATH:+:$PYTHONPATH}"
}

# Sets $python: the interpreter that runs `python -m gridtrain worker`.
setup_environment() {
    local path=${GRIDTRAIN_ENV_PATH:-}
    case ${GRIDTRAIN_ENV:-host} in
    host)
        # The environment's tools (gridtrain, its scripts) on PATH, as when it is activated.
        [[ -n $path ]] && export PATH="$path/bin:$PATH"
        python=${path:+$path/bin/}python3
        ;;
    lcg)
        [[ -f $path/setup.sh ]] ||
            no_environment "no LCG view $path/setup.sh (is /cvmfs/sft.cern.ch mounted here?" \
                "require HAS_CVMFS_sft_cern_ch in the profile)"
        # setup.sh reads unset variables and its own arguments: source it without ours.
        set +u
        set --
        source "$path/setup.sh" || no_environment "sourcing $path/setup.sh failed"
        set -u
        python=python3
        ;;
    container)
        python=python3
        ;;
    packed)
        [[ -f $path ]] || no_environment "the tarball $path was not transferred"
        mkdir -p .gridtrain-env
        tar -xzf "$path" -C .gridtrain-env || no_environment "cannot unpack $path"
        rm -f "$path"  # the scratch disk holds one copy
        if [[ -x .gridtrain-env/bin/conda-unpack ]]; then  # a conda-pack tarball
            .gridtrain-env/bin/conda-unpack || no_environment "conda-unpack failed"
        fi
        python=$PWD/.gridtrain-env/bin/python3
        # A packed interpreter may link a libpython whose RUNPATH names the submit host's path.
        export LD_LIBRARY_PATH="$PWD/.gridtrain-env/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        export PATH="$PWD/.gridtrain-env/bin:$PATH"
        ;;
    *)
        no_environment "GRIDTRAIN_ENV=$GRIDTRAIN_ENV is not host, lcg, container or packed"
        ;;
    esac
    command -v "$python" >/dev/null || no_environment "no $python"
    unpack_wheels
    local found
    found=$("$python" -c 'import sys, gridtrain
print(sys.executable, sys.version.split()[0], gridtrain.__version__, gridtrain.__file__)') ||
        no_environment "$python cannot import gridtrain (ship it: environment gridtrain: shipped)"
    echo "gridtrain job: environment ${GRIDTRAIN_ENV:-host}: python, version, gridtrain: $found"
    export GRIDTRAIN_PYTHON=$python
}

python=
setup_environment
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
[[ -f ps.secret ]] && chmod 600 ps.secret

if ((${#command[@]} == 0)); then
    command=("$python" -m gridtrain worker --spec worker.json --address "${GRIDTRAIN_PS_ADDRESS:?not set}"
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
