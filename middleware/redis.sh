#!/usr/bin/env bash
# Redis as a local process on 127.0.0.1:6379 (no system service): redis.sh start|stop STATE_DIR
# (REDIS_BIND=ADDR to listen on another address, as the multi-host harness does; REDIS_PORT=N for
# another port, as the harness's second Redis, the one Ray's GCS keeps its state in, uses).
set -euo pipefail
action=$1 state=$(realpath -m "$2")
bind=${REDIS_BIND:-127.0.0.1}
port=${REDIS_PORT:-6379}
case $action in
start)
  command -v redis-server >/dev/null || { echo "redis-server is not installed: run middleware/install.sh first" >&2; exit 1; }
  mkdir -p "$state"
  # Without a password Redis answers only loopback clients ("protected mode"); on another address (the
  # multi-host harness's private bridge, no route out) the other hosts are its clients.
  protected=yes
  [ "$bind" = 127.0.0.1 ] || protected=no
  redis-server --port "$port" --bind "$bind" --protected-mode "$protected" --save "" --appendonly no --daemonize yes \
    --dir "$state" --pidfile "$state/redis.pid" --logfile "$state/redis.log"
  for _ in $(seq 1 50); do
    redis-cli -h "$bind" -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.2
  done
  echo "redis $(redis-cli -h "$bind" -p "$port" info server | sed -n 's/^redis_version:\(.*\)\r$/\1/p') on $bind:$port"
  ;;
stop)
  redis-cli -h "$bind" -p "$port" shutdown nosave >/dev/null 2>&1 || true
  ;;
*) echo "usage: $0 start|stop STATE_DIR" >&2; exit 2 ;;
esac
