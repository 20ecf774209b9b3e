#!/usr/bin/env bash
# Start a local S3-compatible server (s3s-fs, crates.io) for the test suite.
#
#   middleware/s3/start.sh <state-dir>          install if missing, start, wait until it answers
#   middleware/s3/start.sh --install-only       only install the binary (needs network: run it
#                                               OUTSIDE the loopback-only namespace)
#
# The server listens on $IMRAY_S3_HOST:$IMRAY_S3_PORT (127.0.0.1:9000), keeps its objects under
# <state-dir>/data, logs to <state-dir>/s3.log and writes <state-dir>/s3.pid. s3s-fs verifies AWS
# SigV4 signatures (header and presigned-URL), with one key pair:
#   IMRAY_S3_ACCESS_KEY (default imray) / IMRAY_S3_SECRET_KEY (default imray-secret-key-for-tests)
# Idempotent: a second run finds the binary in the cache root and the server already running.
# This script never enters a network namespace; wrap it in scripts/netns-run if needed.
set -euo pipefail

S3S_FS_VERSION="0.14.1"   # 0.15+ need a newer rustc than the 1.95 used here (0.17.0: rust 1.96)
CARGO_ROOT="${IMRAY_S3_CARGO_ROOT:-$HOME/.cache/imray/cargo}"
BIN="$CARGO_ROOT/bin/s3s-fs"
HOST="${IMRAY_S3_HOST:-127.0.0.1}"
PORT="${IMRAY_S3_PORT:-9000}"
ACCESS_KEY="${IMRAY_S3_ACCESS_KEY:-imray}"
SECRET_KEY="${IMRAY_S3_SECRET_KEY:-imray-secret-key-for-tests}"
TIMEOUT="${IMRAY_S3_START_TIMEOUT:-60}"

usage() { echo "usage: $0 <state-dir> | --install-only" >&2; exit 2; }
[ "$#" -eq 1 ] || usage

install_server() {
  if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -qw "$S3S_FS_VERSION"; then
    echo "s3s-fs $S3S_FS_VERSION already installed: $BIN"
    return 0
  fi
  command -v cargo >/dev/null || { echo "cargo not found; install a Rust toolchain (>= 1.92)" >&2; exit 1; }
  echo "installing s3s-fs $S3S_FS_VERSION into $CARGO_ROOT (a cargo build; several minutes on 2 cores)..."
  mkdir -p "$CARGO_ROOT"
  local t0=$SECONDS
  if ! cargo install s3s-fs --version "$S3S_FS_VERSION" --features binary --locked --root "$CARGO_ROOT"; then
    echo "cargo install failed; if this ran inside a loopback-only namespace, run" >&2
    echo "  $0 --install-only   outside it first" >&2
    exit 1
  fi
  echo "s3s-fs build took $((SECONDS - t0)) s"
}

if [ "$1" = "--install-only" ]; then
  install_server
  exit 0
fi

STATE_DIR="$1"
mkdir -p "$STATE_DIR/data"
STATE_DIR="$(cd "$STATE_DIR" && pwd)"
DATA="$STATE_DIR/data"
LOG="$STATE_DIR/s3.log"
PIDFILE="$STATE_DIR/s3.pid"
URL="http://$HOST:$PORT/"

# Any HTTP status (403 for an unsigned request) means the server answers.
answers() {
  local code
  code="$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$URL" 2>/dev/null || true)"
  [ -n "$code" ] && [ "$code" != "000" ]
}

ours_alive() {  # pid file names a live s3s-fs process
  [ -f "$PIDFILE" ] || return 1
  local pid; pid="$(cat "$PIDFILE")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q s3s-fs
}

fail() {
  echo "s3s-fs did not come up on $URL: $1" >&2
  echo "---- last lines of $LOG ----" >&2
  tail -n 30 "$LOG" >&2 2>/dev/null || true
  exit 1
}

if ours_alive; then
  if answers; then
    echo "s3s-fs already running (pid $(cat "$PIDFILE")) on $URL"
    exit 0
  fi
  # alive but not answering yet (another start in progress?): fall through to the wait below
else
  rm -f "$PIDFILE"
  if answers; then
    echo "something else already answers on $URL (not the pid in $PIDFILE); refusing to start" >&2
    exit 1
  fi
  install_server
  echo "==== $(date -u +%FT%TZ) starting s3s-fs $S3S_FS_VERSION on $HOST:$PORT, data $DATA" >>"$LOG"
  # s3s-fs takes its keys only as arguments (they show in `ps`; fine for test keys).
  RUST_LOG="${RUST_LOG:-s3s_fs=info,s3s=info}" nohup setsid "$BIN" \
    --host "$HOST" --port "$PORT" \
    --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" \
    "$DATA" >>"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
fi

t0=$SECONDS
while ! answers; do
  ours_alive || fail "process exited"
  [ $((SECONDS - t0)) -lt "$TIMEOUT" ] || fail "no answer within ${TIMEOUT} s"
  sleep 0.2
done
echo "s3s-fs $S3S_FS_VERSION running (pid $(cat "$PIDFILE")) on $URL after $((SECONDS - t0)) s; data $DATA, log $LOG"
