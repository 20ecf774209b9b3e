#!/usr/bin/env bash
# Stop the Nacos server that start.sh started for STATE_DIR (SIGTERM, then SIGKILL after 30 s).
# Idempotent: exits 0 when nothing is running. Leaves STATE_DIR (data, logs) in place.
set -euo pipefail

[ "$#" -eq 1 ] && [ -n "$1" ] || { echo "usage: $0 STATE_DIR" >&2; exit 2; }
[ -d "$1" ] || { echo "nacos: $1 does not exist; nothing to stop" >&2; exit 0; }
state="$(cd "$1" && pwd)"
pidfile="$state/nacos.pid"

ours() {  # the pid is still the JVM that start.sh launched for this state dir
  local args
  args="$(tr '\0' '\n' 2>/dev/null <"/proc/$1/cmdline")" || return 1
  grep -qxF -- "-Dnacos.home=$state" <<<"$args"
}

[ -s "$pidfile" ] || { echo "nacos: not running (no pid file)" >&2; exit 0; }
pid="$(cat "$pidfile")"
if ! ours "$pid"; then
  echo "nacos: pid $pid is not running Nacos for $state; removing stale pid file" >&2
  rm -f "$pidfile"
  exit 0
fi

kill -TERM "$pid"
for _ in $(seq 1 60); do
  ours "$pid" || break
  sleep 0.5
done
if ours "$pid"; then
  echo "nacos: pid $pid still running after 30 s; sending SIGKILL" >&2
  kill -KILL "$pid"
  sleep 0.5
fi
rm -f "$pidfile"
echo "nacos: stopped (pid $pid)"
