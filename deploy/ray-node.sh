#!/usr/bin/env bash
# Start Ray on one machine of an imray cluster. cluster.yaml's head_start_ray_commands and
# worker_start_ray_commands run this file, and so does the multi-host test harness
# (scripts/multihost), so the commands an operator's cluster runs are the ones the tests run.
#
#   deploy/ray-node.sh head [--node-ip ADDR] [RAY START ARGS...]
#   deploy/ray-node.sh worker HEAD_ADDR [--node-ip ADDR] [RAY START ARGS...]
#
# Both roles:
#   - RAY_AUTH_MODE=token: every RPC and dashboard request must carry the cluster's token (Ray reads
#     it from ~/.ray/auth_token, which `ray up` copies to every node; see cluster.yaml). Without it,
#     anyone who reaches the dashboard (0.0.0.0) or the GCS port could run code on every node.
#   - `imray ray-env`: Serve's HAProxy ingress (with X-Forwarded-For) and its throughput mode, which
#     Ray's processes read from the environment when they start.
#   - FORWARDED_ALLOW_IPS=<head address>,127.0.0.1: HTTP enters through Serve's proxy on the head only
#     (proxy_location HeadOnly), so a gateway replica, on whatever node, trusts X-Forwarded-For from
#     the head's address (uvicorn's default trusts 127.0.0.1 only). An operator's own value wins.
# head:   GCS on port 6380 (6379 is Redis's), the dashboard on all addresses; no `socket_node`
#         resource, so no socket-node actor is ever placed on the head. The GCS checks each raylet
#         every second and declares it dead after 7 failed checks of up to 5 s each (Ray's defaults:
#         every 3 s, 5 failures, 10 s timeout): a lost host whose ports refuse is declared dead in
#         about 7 s instead of ~15 s, one that drops packets in about 40 s instead of ~65 s, so its
#         socket node and shards are relaunched sooner. A 20 s partition cost 5 failed checks on the
#         multi-host harness (4 timeouts, then a reset connection when the link came back): not a loss.
#         With RAY_REDIS_ADDRESS=host:port in its environment (and --redis-password if that Redis
#         has one), the GCS keeps the cluster's tables in that Redis (Ray's GCS fault tolerance): a
#         head started again on the same address, after its machine was lost, takes the cluster over
#         while the workers' sessions stay open. Use a Redis of its own, not imray's.
# worker: joins HEAD_ADDR:6380 with one unit of `socket_node`: socket nodes land one per worker.
#         Its processes wait up to 5 minutes for a lost head to come back (Ray's default: 60 s),
#         time for an operator or a supervisor to start it again with GCS fault tolerance.
#
# The tools come from $IMRAY_VENV/bin (default ~/imray-venv, where cluster.yaml installs imray) when
# that exists, else from PATH. RAY_NODE_DRY_RUN=1 prints the environment and the `ray start` command
# instead of running them (tests/test_cluster_yaml.py checks cluster.yaml's lines that way).
set -euo pipefail

RAY_PORT=6380
usage() {
  echo "usage: $0 head [--node-ip ADDR] [RAY START ARGS...]" >&2
  echo "       $0 worker HEAD_ADDR [--node-ip ADDR] [RAY START ARGS...]" >&2
  exit 2
}

role=${1:-}
[ "$#" -gt 0 ] && shift
head_addr=""
case $role in
  head) ;;
  worker) [ "$#" -gt 0 ] || usage; head_addr=$1; shift ;;
  *) usage ;;
esac
node_ip=""
if [ "${1:-}" = "--node-ip" ]; then
  [ "$#" -ge 2 ] || usage
  node_ip=$2
  shift 2
fi

venv=${IMRAY_VENV:-$HOME/imray-venv}
[ -x "$venv/bin/ray" ] && export PATH="$venv/bin:$PATH"

export RAY_AUTH_MODE=token
if [ "${RAY_NODE_DRY_RUN:-}" != 1 ]; then
  eval "$(imray ray-env)"
fi

# Each node's metrics agent (Ray's and imray's metrics, issue 20): Prometheus scrapes
# http://<node>:$RAY_METRICS_PORT/metrics (deploy/grafana/imray.json charts imray's).
RAY_METRICS_PORT=${RAY_METRICS_PORT:-8090}
ip_args=()
[ -n "$node_ip" ] && ip_args=(--node-ip-address="$node_ip")
if [ "$role" = head ]; then
  export RAY_health_check_period_ms=${RAY_health_check_period_ms:-1000}
  export RAY_health_check_timeout_ms=${RAY_health_check_timeout_ms:-5000}
  export RAY_health_check_failure_threshold=${RAY_health_check_failure_threshold:-7}
  # The head's own address, as Ray will pick it when none is given.
  head_ip=${node_ip:-$(python -c 'from ray._private.services import get_node_ip_address as f; print(f())')}
  cmd=(ray start --head --port="$RAY_PORT" --dashboard-host=0.0.0.0 --metrics-export-port="$RAY_METRICS_PORT"
       "${ip_args[@]}" "$@")
else
  head_ip=${head_addr%:*}
  export RAY_gcs_rpc_server_reconnect_timeout_s=${RAY_gcs_rpc_server_reconnect_timeout_s:-300}
  cmd=(ray start --address="$head_ip:$RAY_PORT" --resources='{"socket_node": 1}' --metrics-export-port="$RAY_METRICS_PORT"
       "${ip_args[@]}" "$@")
fi
# 127.0.0.1 stays trusted too (uvicorn's default): a local proxy is the node's own.
export FORWARDED_ALLOW_IPS=${FORWARDED_ALLOW_IPS:-$head_ip,127.0.0.1}

if [ "${RAY_NODE_DRY_RUN:-}" = 1 ]; then
  echo "RAY_AUTH_MODE=$RAY_AUTH_MODE"
  echo "FORWARDED_ALLOW_IPS=$FORWARDED_ALLOW_IPS"
  if [ "$role" = head ]; then
    for name in period_ms timeout_ms failure_threshold; do
      var=RAY_health_check_$name
      echo "$var=${!var}"
    done
  fi
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi
exec "${cmd[@]}"
