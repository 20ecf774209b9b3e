#!/usr/bin/env bash
# Stop the s3s-fs server started by middleware/s3/start.sh <state-dir>. Idempotent; keeps the data.
set -euo pipefail

[ "$#" -eq 1 ] || { echo "usage: $0 <state-dir>" >&2; exit 2; }
PIDFILE="$1/s3.pid"

if [ ! -f "$PIDFILE" ]; then
  echo "s3s-fs not running (no $PIDFILE)"
  exit 0
fi
pid="$(cat "$PIDFILE")"
if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null \
   || ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q s3s-fs; then
  echo "s3s-fs not running (stale pid file)"
  rm -f "$PIDFILE"
  exit 0
fi

# SIGINT = s3s-fs's graceful shutdown (waits up to 10 s for open connections); then TERM, KILL.
for sig in INT TERM KILL; do
  kill -s "$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break 2
    sleep 0.2
  done
done
if kill -0 "$pid" 2>/dev/null; then
  echo "could not stop s3s-fs (pid $pid)" >&2
  exit 1
fi
rm -f "$PIDFILE"
echo "s3s-fs stopped (pid $pid)"
