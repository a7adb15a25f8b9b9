#!/usr/bin/env bash
# A one-machine HTCondor pool for the tests: Debian trixie's minicondor in a debootstrapped chroot,
# with two simulated GPUs. Facts behind each step: ../shared/NOTES-htcondor-pool.md.
#
#   tests/pool/pool.sh build    # debootstrap + minicondor, once (reused while the stamp exists)
#   tests/pool/pool.sh start    # build if needed, mount, start condor_master, wait, write a token
#   tests/pool/pool.sh stop     # condor_off, wait for the chroot's processes, unmount
#   tests/pool/pool.sh status   # "up" or "down" (exit 0 / 1)
#   tests/pool/pool.sh env      # CONDOR_CONFIG=... lines for the htcondor2 bindings on the host
#
# Needs root and apt-get. Environment:
#   GRIDTRAIN_POOL_DIR    where everything lives (default /var/tmp/gridtrain-pool)
#   GRIDTRAIN_POOL_MIRROR Debian mirror (default: the first non-security URI of this machine's apt
#                         sources)
#   GRIDTRAIN_POOL_SHARE  extra host paths made visible to jobs at the same path, space separated
#                         (default: the checkout and the Python installation behind .venv)
#
# Jobs run as the ordinary user `gridtrain` (uid 4242 unless GRIDTRAIN_POOL_UID), which exists
# only inside the chroot; files a job or the schedd writes on the host belong to that uid, so run
# directories must be writable by it ($POOL_DIR/runs is mode 1777 and shared at the same path).
set -euo pipefail
unset CONDOR_CONFIG  # every condor_* here runs inside the chroot, with its own config

POOL_DIR=${GRIDTRAIN_POOL_DIR:-/var/tmp/gridtrain-pool}
ROOT_DIR="$POOL_DIR/chroot"
RUNS_DIR="$POOL_DIR/runs"
TOKEN_DIR="$POOL_DIR/tokens.d"
CLIENT_CONFIG="$POOL_DIR/condor_config"
POOL_USER=gridtrain
POOL_UID=${GRIDTRAIN_POOL_UID:-4242}
STAMP="$ROOT_DIR/.gridtrain-pool-built"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CHECKOUT=$(cd "$HERE/../.." && pwd)

say() { echo "pool: $*" >&2; }
die() { say "error: $*"; exit 1; }
in_root() { chroot "$ROOT_DIR" "$@"; }

mirror() {
    if [[ -n ${GRIDTRAIN_POOL_MIRROR:-} ]]; then echo "$GRIDTRAIN_POOL_MIRROR"; return; fi
    local uri
    uri=$( { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}';
             grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
                 awk '{print $2}'; } | grep -m1 '/debian/*$' || true)
    [[ -n $uri ]] || die "no Debian mirror in /etc/apt/sources*; set GRIDTRAIN_POOL_MIRROR"
    echo "$uri"
}

# Host paths that jobs must see at the same path: the checkout, and the Python that .venv points
# to (pyenv's lives under /root, mode 700 on the host; only the chroot's own /root is opened).
shared_paths() {
    if [[ -n ${GRIDTRAIN_POOL_SHARE:-} ]]; then echo "$GRIDTRAIN_POOL_SHARE"; return; fi
    local paths=("$CHECKOUT") home
    if [[ -f $CHECKOUT/.venv/pyvenv.cfg ]]; then
        home=$(sed -n 's/^home *= *//p' "$CHECKOUT/.venv/pyvenv.cfg")
        home=$(cd "$home/.." && pwd -P)   # .../versions/3.11.7, not its bin/
        [[ $home == /usr || $home == /usr/local ]] || paths+=("$home")
    fi
    echo "${paths[*]}"
}

build() {
    [[ $(id -u) == 0 ]] || die "building the pool needs root"
    if [[ -f $STAMP ]]; then say "reusing $ROOT_DIR"; return; fi
    command -v debootstrap >/dev/null || die "debootstrap is missing: make system-deps"
    unmount_all
    # Never delete through a bind mount: the checkout and the Python installation are mounted here.
    if awk -v root="$ROOT_DIR" 'index($2, root "/") == 1 {found=1} END {exit !found}' /proc/self/mounts; then
        die "mounts remain under $ROOT_DIR; run '$0 stop' first"
    fi
    local url; url=$(mirror)
    say "building $ROOT_DIR from $url (about 2 minutes)"
    rm -rf "$ROOT_DIR"
    mkdir -p "$POOL_DIR"
    debootstrap --variant=minbase trixie "$ROOT_DIR" "$url" >"$POOL_DIR/debootstrap.log" 2>&1 ||
        die "debootstrap failed; see $POOL_DIR/debootstrap.log"
    # Not --include=minicondor: debootstrap cannot resolve python3-cryptography's virtual dependency.
    echo "deb $url trixie main" >"$ROOT_DIR/etc/apt/sources.list"
    mount_all
    {
        in_root apt-get update -q &&
            DEBIAN_FRONTEND=noninteractive in_root apt-get install -y -q --no-install-recommends \
                minicondor
    } >"$POOL_DIR/apt.log" 2>&1 || { unmount_all; die "minicondor install failed; see $POOL_DIR/apt.log"; }
    in_root apt-get clean
    unmount_all
    in_root id -u "$POOL_USER" >/dev/null 2>&1 ||
        in_root useradd --uid "$POOL_UID" --create-home --shell /bin/bash "$POOL_USER"
    configure
    touch "$STAMP"
    say "built $ROOT_DIR ($(du -sm "$ROOT_DIR" | cut -f1) MB)"
}

# The pool's configuration, written on every start so that a chroot built by an older checkout
# gets this one's settings.
configure() {
    cat >"$ROOT_DIR/etc/condor/config.d/90-gridtrain.conf" <<'EOF'
# gridtrain test pool (tests/pool/pool.sh)
# No mount namespaces in this sandbox: without these, every job is held (unshare, errno 22).
MOUNT_UNDER_SCRATCH =
USE_PID_NAMESPACES = False
# Two simulated Tesla V100 (capability 7.0, 16 GB): GPU submit files match, jobs get
# CUDA_VISIBLE_DEVICES.
use feature : GPUs
GPU_DISCOVERY_EXTRA = -simulate:2,2
# Submission of 1,000 jobs at once, and a fast negotiator for short tests.
MAX_JOBS_SUBMITTED = 100000
# Negotiate as soon as asked (a submission sends a reschedule) and at least every 2 s, and let
# the startd report its slots every 5 s (not 300): on a busy machine the pool's own timers, not the
# code under test, would otherwise set the tests' pace.
NEGOTIATOR_INTERVAL = 2
NEGOTIATOR_MIN_INTERVAL = 1
NEGOTIATOR_CYCLE_DELAY = 1
UPDATE_INTERVAL = 5
SCHEDD_INTERVAL = 5
STARTER_UPDATE_INTERVAL = 5
EOF
}

is_mounted() { mountpoint -q "$1" 2>/dev/null; }

mount_one() {  # mount_one SOURCE TARGET [options...]
    local src=$1 dst=$2; shift 2
    is_mounted "$dst" && return
    mkdir -p "$dst"
    mount "$@" "$src" "$dst"
}

mount_all() {
    mount_one proc "$ROOT_DIR/proc" -t proc
    mount_one /dev "$ROOT_DIR/dev" --bind
    [[ -f $STAMP ]] || return 0  # while building, only proc and dev
    mkdir -p "$RUNS_DIR" && chmod 1777 "$RUNS_DIR"
    mount_one "$RUNS_DIR" "$ROOT_DIR$RUNS_DIR" --bind
    local path
    for path in $(shared_paths); do
        mount_one "$path" "$ROOT_DIR$path" --bind
        # The job user reads the shared tree itself (jobs/worker.sh, .venv): a fresh clone made
        # in `mktemp -d` is mode 700, so open the shared folder (not its contents) to others.
        chmod o+rx "$path"
        # The chroot's own parents of a shared path (e.g. its /root) must be traversable by the
        # job user; the host's stay as they are.
        local parent=$path
        while parent=$(dirname "$parent"); [[ $parent != / ]]; do
            chmod o+x "$ROOT_DIR$parent"
        done
    done
}

# Unmount everything under the chroot, deepest first (the reverse of mounting).
unmount_all() {
    [[ -d $ROOT_DIR ]] || return 0
    local target
    awk -v root="$ROOT_DIR" '$2 == root || index($2, root "/") == 1 {print $2}' /proc/self/mounts |
        sort -r | while read -r target; do
            umount "$target" 2>/dev/null || umount -l "$target"
        done
}

# PIDs of processes whose root is the chroot (what condor_master started), nothing else.
chroot_pids() {
    local proc real
    real=$(readlink -f "$ROOT_DIR")
    for proc in /proc/[0-9]*; do
        [[ $(readlink "$proc/root" 2>/dev/null) == "$real" ]] && echo "${proc#/proc/}"
    done
    return 0
}

is_up() {
    [[ -n $(chroot_pids) ]] && in_root condor_status -af Name 2>/dev/null | grep -q . &&
        in_root condor_q -totals >/dev/null 2>&1
}

start() {
    build
    # Already up (started from another checkout, say): still share this checkout with the jobs.
    if is_up; then mount_all; say "already up"; write_client; return; fi
    configure
    mount_all
    local dir
    for dir in /var/run/condor /var/log/condor /var/lib/condor /var/lock/condor; do
        in_root mkdir -p "$dir"  # inside: the chroot's /var/run links to its own /run
        in_root chown condor:condor "$dir"
    done
    local started=$SECONDS
    in_root condor_master
    local deadline=$((SECONDS + ${GRIDTRAIN_POOL_START_TIMEOUT:-120}))
    until is_up; do
        ((SECONDS < deadline)) || die "pool not up after $((SECONDS - started)) s; see $ROOT_DIR/var/log/condor/"
        sleep 1
    done
    write_client
    say "up in $((SECONDS - started)) s (CONDOR_CONFIG=$CLIENT_CONFIG)"
}

# An IDTOKEN for the job user and a client config for the bindings and condor_* on the host.
write_client() {
    mkdir -p "$TOKEN_DIR" && chmod 700 "$TOKEN_DIR"
    if [[ ! -s $TOKEN_DIR/$POOL_USER ]]; then
        local domain
        domain=$(in_root condor_config_val UID_DOMAIN)
        in_root condor_token_create -identity "$POOL_USER@$domain" >"$TOKEN_DIR/$POOL_USER.part"
        chmod 600 "$TOKEN_DIR/$POOL_USER.part"
        mv "$TOKEN_DIR/$POOL_USER.part" "$TOKEN_DIR/$POOL_USER"
    fi
    # The schedd's address file, seen from the host: without it the bindings find the "local"
    # schedd by this host's name, which fails in a process that has loaded TensorFlow.
    local address_file
    address_file=$ROOT_DIR$(in_root condor_config_val SCHEDD_ADDRESS_FILE)
    cat >"$CLIENT_CONFIG" <<EOF
# Written by tests/pool/pool.sh: talk to the test pool as $POOL_USER with an IDTOKEN.
CONDOR_HOST = 127.0.0.1
SEC_CLIENT_AUTHENTICATION_METHODS = IDTOKENS
SEC_TOKEN_DIRECTORY = $TOKEN_DIR
SCHEDD_ADDRESS_FILE = $address_file
EOF
    {
        echo "CONDOR_CONFIG=$CLIENT_CONFIG"
        echo "GRIDTRAIN_POOL_DIR=$POOL_DIR"
        echo "GRIDTRAIN_POOL_ROOT=$ROOT_DIR"
        echo "GRIDTRAIN_POOL_RUNS=$RUNS_DIR"
        echo "GRIDTRAIN_POOL_USER=$POOL_USER"
        echo "GRIDTRAIN_POOL_UID=$POOL_UID"
    } >"$POOL_DIR/pool.env"
}

stop() {
    [[ -d $ROOT_DIR ]] || return 0
    if [[ -n $(chroot_pids) ]]; then
        in_root condor_off -master >/dev/null 2>&1 || true
        local deadline=$((SECONDS + 30)) pid
        while [[ -n $(chroot_pids) ]] && ((SECONDS < deadline)); do sleep 0.5; done
        for pid in $(chroot_pids); do kill -KILL "$pid" 2>/dev/null || true; done
        sleep 0.2
    fi
    unmount_all
    rm -f "$TOKEN_DIR/$POOL_USER"  # the signing key stays; a new start writes a new token
    say "stopped"
}

case ${1:-} in
build) build ;;
start) start ;;
stop) stop ;;
status) if is_up; then echo up; else echo down; exit 1; fi ;;
env) write_client; cat "$POOL_DIR/pool.env" ;;
*) echo "usage: $0 build|start|stop|status|env" >&2; exit 2 ;;
esac
