#!/usr/bin/env bash
# Starts N copies of a program on this machine with the environment variables
# that PyTorch's torchrun sets, for data-parallel training over c10d where
# Python is not installed.
#
#   examples/launch.sh [--nproc-per-node N] [--nnodes M] [--node-rank R]
#                      [--master-addr ADDR] [--master-port PORT]
#                      [--] PROGRAM [ARGS...]
#
# Options may be spelt with dashes or underscores (--nproc_per_node) and given
# as "--opt V" or "--opt=V". Defaults: N=1, M=1, R=0, ADDR=127.0.0.1,
# PORT=29500. Local process i (0..N-1) gets RANK=R*N+i, LOCAL_RANK=i,
# WORLD_SIZE=M*N, LOCAL_WORLD_SIZE=N, GROUP_RANK=R, MASTER_ADDR, MASTER_PORT,
# and OMP_NUM_THREADS=1 when N > 1 and OMP_NUM_THREADS is not already set.
#
# As soon as one process exits with a non-zero status, the others get SIGTERM
# (then SIGKILL after 10 s) and the launcher exits with that status. SIGINT
# or SIGTERM sent to the launcher goes to every process; the launcher then
# exits with 130 or 143. Each process runs in its own process group, so the
# signals also reach whatever it started itself.
#
# Example, two processes training on this machine:
#   examples/launch.sh --nproc_per_node 2 -- \
#     build/debian/examples/train_classifier --data /usr/share/datasets/fashion-mnist
set -euo pipefail

usage() {
  cat >&2 <<'EOF'
usage: examples/launch.sh [--nproc-per-node N] [--nnodes M] [--node-rank R]
                          [--master-addr ADDR] [--master-port PORT]
                          [--] PROGRAM [ARGS...]
Options may be spelt with - or _, as "--opt V" or "--opt=V".
Defaults: N=1, M=1, R=0, ADDR=127.0.0.1, PORT=29500.
EOF
  exit 2
}

fail() {
  echo "launch.sh: $*" >&2
  exit 2
}

# Succeeds when $1 is a whole number from $2 to $3 (at most 9 digits, so that
# the arithmetic cannot overflow; 10# reads a leading 0 as decimal).
in_range() {
  [[ $1 =~ ^[0-9]{1,9}$ ]] && ((10#$1 >= $2 && 10#$1 <= $3))
}

nproc=1 nnodes=1 node_rank=0 master_addr=127.0.0.1 master_port=29500
while (($#)); do
  case $1 in
    --) shift; break ;;
    -h | --help) usage ;;
    --*) ;;  # an option: read below
    -*) fail "unknown option '$1'" ;;
    *) break ;;  # the program: everything from here on is its own
  esac
  # Which variable the option sets; then its value, from "--opt=V" or "--opt V".
  case ${1%%=*} in
    --nproc[-_]per[-_]node) var=nproc ;;
    --nnodes) var=nnodes ;;
    --node[-_]rank) var=node_rank ;;
    --master[-_]addr) var=master_addr ;;
    --master[-_]port) var=master_port ;;
    *) fail "unknown option '${1%%=*}'" ;;
  esac
  if [[ $1 == *=* ]]; then
    printf -v "$var" '%s' "${1#*=}"
    shift
  else
    (($# >= 2)) || fail "$1 needs a value"
    printf -v "$var" '%s' "$2"
    shift 2
  fi
done

max=999999999
in_range "$nproc" 1 $max || fail "--nproc-per-node must be a positive integer, not '$nproc'"
in_range "$nnodes" 1 $max || fail "--nnodes must be a positive integer, not '$nnodes'"
in_range "$node_rank" 0 $((10#$nnodes - 1)) ||
  fail "--node-rank must be an integer from 0 to $((10#$nnodes - 1)), not '$node_rank'"
in_range "$master_port" 1 65535 ||
  fail "--master-port must be an integer from 1 to 65535, not '$master_port'"
[[ -n $master_addr ]] || fail "--master-addr must not be empty"
(($#)) || fail "no program given (try --help)"
nproc=$((10#$nproc)) nnodes=$((10#$nnodes)) node_rank=$((10#$node_rank))
master_port=$((10#$master_port))

export WORLD_SIZE=$((nnodes * nproc)) LOCAL_WORLD_SIZE=$nproc GROUP_RANK=$node_rank
export MASTER_ADDR=$master_addr MASTER_PORT=$master_port
if ((nproc > 1)) && [[ -z ${OMP_NUM_THREADS+set} ]]; then
  echo "launch.sh: setting OMP_NUM_THREADS=1 for each process so that they do" \
    "not overload the machine; set it yourself to tune performance." >&2
  export OMP_NUM_THREADS=1
fi

# Sends signal $1 to every process still running (to its whole process
# group), waits up to 10 s for them to exit, then kills what is left.
declare -A rank_of=()  # pid -> rank, for the processes not yet waited for
stop_all() {
  local pid
  for pid in "${!rank_of[@]}"; do kill -s "$1" -- "-$pid" 2>/dev/null || true; done
  for _ in {1..100}; do
    [[ -n $(jobs -pr) ]] || break  # jobs -pr: the pids still running
    sleep 0.1
  done
  for pid in "${!rank_of[@]}"; do kill -s KILL -- "-$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true  # 2>/dev/null: no "Killed" notices from bash
}

# On SIGINT or SIGTERM, pass the signal on, wait, and exit 128 + its number.
on_signal() {
  trap '' INT TERM  # a second signal must not interrupt the shutdown
  stop_all "$1"
  exit "$2"
}
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM

# Job control (set -m) puts each process in a process group of its own and
# keeps it from ignoring SIGINT, as background processes otherwise do.
set -m
for ((i = 0; i < nproc; i++)); do
  RANK=$((node_rank * nproc + i)) LOCAL_RANK=$i "$@" &
  rank_of[$!]=$((node_rank * nproc + i))
done
set +m

# Wait for the processes one at a time; the first failure stops the rest.
# wait -n returns the status of the next one to exit, and -p names its pid.
while ((${#rank_of[@]})); do
  pid='' status=0
  wait -n -p pid "${!rank_of[@]}" 2>/dev/null || status=$?
  rank=${rank_of[$pid]}
  unset "rank_of[$pid]"
  if ((status != 0)); then
    stop_all TERM
    echo "launch.sh: rank $rank exited with status $status; stopped the others" >&2
    exit "$status"
  fi
done
