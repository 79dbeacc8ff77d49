#!/usr/bin/env bash
# The project's own load run (issue 17): postern-bench sends through a relay to its own
# counting sink, on loopback, and prints one result line (relay-bench's key=value form).
#
#   cargo build --release && cargo build --release -p postern-bench
#   bench/load.sh TARGET MODE [SIZE] [COUNT] [postern-bench run options...]
#     TARGET  ours | postfix | direct  (postfix: Debian's, configured from ../shared/relay-bench/conf;
#             direct: no relay, the source sends straight to the sink: the harness's own ceiling)
#     MODE    plain | tls | tls-noresume   (tls: STARTTLS both ways, RSA-2048 relay certificate)
#     SIZE    body bytes (default 4096; 100k = 102400)      COUNT  messages (default 20000)
#   e.g. bench/load.sh ours plain 4096 20000 --per-conn 10
#        LB_HOLD=10000 bench/load.sh ours hold    (memory per idle session, then after close)
#
# For `ours` it also counts, with `perf stat` when installed, the relay's syscalls and
# context switches per message (syscalls_per_msg=, perf_ctxsw_per_msg=). Postfix's settings
# are relay-bench's (its main.cf.in/master.cf.in; RB_PF_SET adds main.cf settings, e.g.
# RB_PF_SET='smtp_tls_connection_reuse=yes'). Only loopback is used.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
target=${1:?target: ours | postfix}; mode=${2:?mode: plain | tls | tls-noresume | hold}
size=${3:-4096}; count=${4:-20000}; shift $(( $# < 4 ? $# : 4 ))
case $size in *[kK]) size=$(( ${size%[kK]} * 1024 )) ;; esac
state=${LB_STATE:-/var/tmp/postern-bench}
listen=127.0.0.1:${LB_RELAY_PORT:-12025}; sink=127.0.0.1:${LB_SINK_PORT:-12026}
bench="$here/target/release/postern-bench"; postern=${LB_POSTERN:-$here/target/release/postern}
rb=${LB_RELAY_BENCH:-$here/../shared/relay-bench}
[[ -x $bench ]] || { echo "build it first: cargo build --release -p postern-bench" >&2; exit 2; }
rm -rf "$state/run"; mkdir -p "$state/run" "$state/tls"

# The relay's certificate, as relay-bench's: RSA-2048 (what most MX hosts present).
if [[ ! -s $state/tls/cert.pem ]]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 -subj "/CN=relay-bench.localdomain" \
    -addext "subjectAltName=DNS:relay-bench.localdomain,IP:127.0.0.1" \
    -keyout "$state/tls/key.pem" -out "$state/tls/cert.pem" 2>/dev/null
  chmod 600 "$state/tls/key.pem"
fi

wait_listen() { for _ in $(seq 300); do ss -Hltn "sport = :${1##*:}" | grep -q . && return 0; sleep 0.1; done; return 1; }
pid=""
stop() {
  [[ -z $pid ]] && return
  if [[ $target == postfix ]]; then postfix -c "$state/run/pf/etc" stop >/dev/null 2>&1 || true
  else kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  pid=""
}
trap stop EXIT

case $target in
ours)
  conf="$state/run/postern.toml"
  {
    echo "[server]"; echo "hostname = \"relay-bench.localdomain\""; echo "data_dir = \"$state/run/data\""
    echo "[smtp]"; echo "listen = \"$listen\""
    if [[ $mode == hold ]]; then
      # Room for the held sessions, all from 127.0.0.1.
      echo "max_connections = $(( ${LB_HOLD:-10000} + 100 ))"; echo "max_connections_per_client = $(( ${LB_HOLD:-10000} + 100 ))"
      echo "max_connection_rate_per_client = 0"
    else
      echo "max_connections = ${LB_MAX_CONNECTIONS:-200}"
    fi
    if [[ $mode == tls* ]]; then echo "tls_cert = \"$state/tls/cert.pem\""; echo "tls_key = \"$state/tls/key.pem\""; fi
    echo "[admin]"; echo "listen = \"127.0.0.1:0\""
    # LB_SEGMENT_BYTES: tiny spool segments (deliveries racing appends and deletions).
    [[ -n ${LB_SEGMENT_BYTES:-} ]] && { echo "[spool]"; echo "segment_bytes = $LB_SEGMENT_BYTES"; }
    echo "[outbound]"; echo "relayhost = \"[${sink%:*}]:${sink##*:}\""
    # LB_DEFERRED=N: first N messages to deferred.example, whose next hop (port 1) refuses:
    # they wait in the queue for their retry while the measured load runs past them.
    if [[ -n ${LB_DEFERRED:-} ]]; then
      echo "first_retry_secs = 3600"; echo "max_retry_secs = 3600"
      echo "[outbound.routes]"; echo "\"deferred.example\" = \"[127.0.0.1]:1\""
    fi
  } > "$conf"
  # LB_WRAP: a command to run postern under (e.g. 'perf record -g -o /tmp/perf.data --').
  POSTERN_LOG=${POSTERN_LOG:-info} ${LB_WRAP:-} "$postern" serve --config "$conf" 2> "$state/run/postern.log" &
  pid=$!
  ;;
postfix)
  pf="$state/run/pf"; mkdir -p "$pf/etc" "$pf/spool" "$pf/data"; chown postfix "$pf/data"
  tls=""
  if [[ $mode == tls* ]]; then
    tls="smtpd_tls_security_level = may
smtpd_tls_chain_files = $state/tls/key.pem, $state/tls/cert.pem
smtp_tls_security_level = may
smtpd_tls_received_header = yes"
  fi
  awk -v conf="$pf/etc" -v spool="$pf/spool" -v data="$pf/data" -v listen="$listen" \
      -v relayhost="[${sink%:*}]:${sink##*:}" -v maillog="$pf/maillog" -v tls="$tls" '
    { gsub(/@CONF@/, conf); gsub(/@SPOOL@/, spool); gsub(/@DATA@/, data); gsub(/@LISTEN@/, listen)
      gsub(/@RELAYHOST@/, relayhost); gsub(/@MAILLOG@/, maillog)
      if ($0 == "@TLS@") $0 = tls; print }' "$rb/conf/postfix-main.cf.in" > "$pf/etc/main.cf"
  sed "s#@LISTEN@#$listen#" "$rb/conf/postfix-master.cf.in" > "$pf/etc/master.cf"
  if [[ -n ${RB_PF_SET:-} ]]; then IFS=';' read -ra kv <<<"$RB_PF_SET"; postconf -c "$pf/etc" -e "${kv[@]}"; fi
  postfix -c "$pf/etc" start >/dev/null 2>&1
  pid=$(tr -d ' \n' < "$pf/spool/pid/master.pid")
  ;;
direct) listen=$sink ;;
*) echo "target: ours | postfix | direct" >&2; exit 2 ;;
esac
[[ $target == direct ]] || wait_listen "$listen" || { echo "relay did not listen on $listen" >&2; exit 1; }

if [[ $mode == hold ]]; then
  "$bench" hold --relay "$listen" --pid "$pid" -n "${LB_HOLD:-10000}" "$@"
  exit
fi
args=(run --relay "$listen" --sink "$sink" -l "$size" -m "$count" --label "$target")
[[ -n $pid ]] && args+=(--pid "$pid")
[[ $mode == tls* ]] && args+=(--starttls --sink-starttls)
[[ $mode == tls-noresume ]] && args+=(--no-resume)
if [[ -n ${LB_DEFERRED:-} ]]; then
  "$bench" run --relay "$listen" --sink 127.0.0.1:0 -m "$LB_DEFERRED" -t x@deferred.example --submit-only --label fill >&2
  for _ in $(seq 600); do
    [[ $(grep -c 'status=deferred' "$state/run/postern.log") -ge $LB_DEFERRED ]] && break; sleep 1
  done
  echo "queue: $(grep -c 'status=deferred' "$state/run/postern.log") deferred" >&2
fi
perf_out="$state/run/perf.txt"
if [[ $target == ours ]] && command -v perf >/dev/null; then
  perf stat -e raw_syscalls:sys_enter,context-switches -p "$pid" -x, -o "$perf_out" 2>/dev/null &
  perf_pid=$!
  sleep 0.3  # perf attaches to the relay's threads
  line=$("$bench" "${args[@]}" "$@")
  kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
  sc=$(awk -F, '$3 == "raw_syscalls:sys_enter" { print $1 }' "$perf_out")
  cs=$(awk -F, '$3 == "context-switches" { print $1 }' "$perf_out")
  # perf counted from attach to stop: the run plus the relay's idle moments around it.
  line+=$(awk -v s="$sc" -v c="$cs" -v n="$count" 'BEGIN { printf " syscalls_per_msg=%.2f perf_ctxsw_per_msg=%.2f", s/n, c/n }')
  echo "$line"
else
  "$bench" "${args[@]}" "$@"
fi
