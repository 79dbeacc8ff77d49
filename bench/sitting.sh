#!/usr/bin/env bash
# Issue 17's sitting: relay-bench and the project's load generator, postern and Postfix,
# one after the other on the same box, every raw line appended to one results file.
#   cargo build --release && cargo build --release -p postern-bench
#   bench/sitting.sh bench/results/sitting-$(date +%F).log
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?results file}
rb=${LB_RELAY_BENCH:-$here/../shared/relay-bench}
reps=${SITTING_REPS:-3}
export RB_RESULTS=${RB_RESULTS:-$out.d} RB_OURS_CMD="$here/bench/relay-bench-ours.sh" RB_NICE=${RB_NICE:--10} RB_QUIET_TIMEOUT=${RB_QUIET_TIMEOUT:-60} RB_RETRIES=${RB_RETRIES:-1}
note() { echo "# $* ($(date -u +%FT%TZ), postern $(git -C "$here" rev-parse --short HEAD))" | tee -a "$out"; }
# SITTING_ONLY=ours: only the runs of that target (and direct), e.g. after a change of ours.
skip() { [[ -n ${SITTING_ONLY:-} && $1 != "$SITTING_ONLY" && $1 != direct ]]; }
rbench() { skip "$1" && return; note "relay-bench bench.sh -r $reps $*"; "$rb/bench.sh" -r "$reps" "$@" 2>&1 | tee -a "$out"; }
load() {
  local i
  skip "$1" && return
  note "bench/load.sh $*"
  for i in $(seq "$reps"); do "$here/bench/load.sh" "$@" 2>>"$out.err" | tee -a "$out"; done
}

if [[ ${SITTING_SKIP_RB:-0} != 1 ]]; then
  rbench ours plain 4096 20000
  rbench postfix plain 4096 20000
  rbench ours plain 100k 10000
  rbench postfix plain 100k 10000
  rbench ours tls 4096 5000
  rbench postfix tls 4096 5000
  RB_PF_SET='smtp_tls_connection_reuse=yes' rbench postfix tls 4096 5000
  rbench direct plain 4096 20000
  rbench direct tls 4096 5000
fi
load ours plain 4096 20000
load postfix plain 4096 20000
load ours plain 4096 20000 --per-conn 10
load ours plain 100k 10000
load postfix plain 100k 10000
load ours tls 4096 5000
load ours tls-noresume 4096 5000
load postfix tls 4096 5000
RB_PF_SET='smtp_tls_connection_reuse=yes' load postfix tls 4096 5000
load direct plain 4096 20000
load direct tls 4096 5000
load direct tls-noresume 4096 5000
skip ours || note "bench/load.sh ours hold (10,000 idle sessions)"
skip ours || LB_HOLD=10000 "$here/bench/load.sh" ours hold 2>>"$out.err" | tee -a "$out"
