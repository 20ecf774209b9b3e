# Sourced by scripts/test-stacks, scripts/bench-real and scripts/multihost: the real middleware, in a
# state folder removed on exit, and the settings that point imray at it.
#   IMRAY_MW_HOST   the address the four servers listen on (127.0.0.1; the multi-host harness gives
#                   its middleware host's address)
#   IMRAY_MW_CLIENTS  MariaDB host pattern that may log in from other hosts (e.g. '10.77.0.%')
#   mw_run          a command prefix the servers start and stop under (e.g. `ip netns exec h10`)
state=$(mktemp -d /tmp/imray-mw-XXXXXX)
export IMRAY_S3_ACCESS_KEY=imray IMRAY_S3_SECRET_KEY=imray-secret-key-for-tests  # test-only credentials
mw_host=${IMRAY_MW_HOST:-127.0.0.1}
mw_run=${mw_run:-}
stops=()

cleanup() {
  for stop in "${stops[@]}"; do $stop >/dev/null 2>&1 || true; done
  rm -rf "$state"
}
trap cleanup EXIT

middleware_env() {  # the prefix each server's start and stop runs under
  echo "$mw_run env MARIADB_BIND=$mw_host MARIADB_CLIENTS=${IMRAY_MW_CLIENTS:-} REDIS_BIND=$mw_host" \
    "IMRAY_S3_HOST=$mw_host NACOS_HOST=$mw_host"
}

register_middleware_stops() {  # before anything starts, so a failed or interrupted start is cleaned up
  local on; on=$(middleware_env)
  stops+=("$on middleware/mariadb.sh stop $state/mariadb" "$on middleware/redis.sh stop $state/redis"
          "$on middleware/s3/stop.sh $state/s3" "$on middleware/nacos/stop.sh $state/nacos")
}

start_middleware_servers() {
  local on; on=$(middleware_env)
  $on middleware/mariadb.sh start "$state/mariadb"
  $on middleware/redis.sh start "$state/redis"
  $on middleware/s3/start.sh "$state/s3"
  $on middleware/nacos/start.sh "$state/nacos"
}

start_middleware() {
  register_middleware_stops
  export IMRAY_TEST_REDIS_STATE="$state/redis"  # the Redis-restart test restarts it here
  export IMRAY_TEST_MARIADB_STATE="$state/mariadb"  # the readiness test stops and continues it (pid file)
  start_middleware_servers
}

use_real_stack() {  # IMRAY_MYSQL_DRIVER: mysqldb (mysqlclient, make test installs it) or pymysql
  export IMRAY_DATABASE_URL="mysql+${IMRAY_MYSQL_DRIVER:-mysqldb}://imray:imray-test@$mw_host:3306/imray_test?charset=utf8mb4"
  export IMRAY_REDIS_URL="redis://$mw_host:6379/0"
  export IMRAY_S3_ENDPOINT=$mw_host:9000 IMRAY_S3_BUCKET=imray-test
  export IMRAY_NACOS_SERVER=$mw_host:8848
}
