#!/usr/bin/env bash
# Runs postern under ../shared/relay-bench as target `ours`, in the foreground:
#   cargo build --release
#   RB_OURS_CMD="$PWD/bench/relay-bench-ours.sh" ../shared/relay-bench/run.sh ours plain 4096 20000
# It writes a config from relay-bench's variables: listen on RB_LISTEN, relay everything to
# RB_NEXTHOP, spool in RB_SPOOL, STARTTLS with RB_TLS_CERT/KEY in tls mode; loopback is a
# trusted network by default, outbound TLS is opportunistic (may), no DNS. It logs at info
# (one line per event, to relay-bench's ours.log), as Postfix logs to its maillog.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
conf="$RB_SPOOL/postern.toml"
{
  echo "[server]"
  echo "hostname = \"relay-bench.localdomain\""
  echo "data_dir = \"$RB_SPOOL/data\""
  echo "[smtp]"
  echo "listen = \"$RB_LISTEN\""
  echo "max_connections = 200"
  if [[ ${RB_MODE:-plain} == tls ]]; then
    echo "tls_cert = \"$RB_TLS_CERT\""
    echo "tls_key = \"$RB_TLS_KEY\""
  fi
  echo "[admin]"
  echo "listen = \"127.0.0.1:0\""
  echo "[outbound]"
  echo "relayhost = \"[${RB_NEXTHOP%:*}]:${RB_NEXTHOP##*:}\""
} > "$conf"
POSTERN_LOG=${POSTERN_LOG:-info} exec "$here/target/release/postern" serve --config "$conf"
