# Sourced by scripts/test-stacks and scripts/bench-real: the real middleware on 127.0.0.1, in a
# state folder removed on exit, and the settings that point imray at it.
state=$(mktemp -d /tmp/imray-mw-XXXXXX)
export IMRAY_S3_ACCESS_KEY=imray IMRAY_S3_SECRET_KEY=imray-secret-key-for-tests  # test-only credentials
stops=()

cleanup() {
  for stop in "${stops[@]}"; do $stop >/dev/null 2>&1 || true; done
  rm -rf "$state"
}
trap cleanup EXIT

start_middleware() {
  middleware/mariadb.sh start "$state/mariadb"; stops+=("middleware/mariadb.sh stop $state/mariadb")
  middleware/redis.sh start "$state/redis"; stops+=("middleware/redis.sh stop $state/redis")
  export IMRAY_TEST_REDIS_STATE="$state/redis"  # the Redis-restart test restarts it here
  middleware/s3/start.sh "$state/s3"; stops+=("middleware/s3/stop.sh $state/s3")
  middleware/nacos/start.sh "$state/nacos"; stops+=("middleware/nacos/stop.sh $state/nacos")
}

use_real_stack() {
  export IMRAY_DATABASE_URL="mysql+pymysql://imray:imray-test@127.0.0.1:3306/imray_test?charset=utf8mb4"
  export IMRAY_REDIS_URL="redis://127.0.0.1:6379/0"
  export IMRAY_S3_ENDPOINT=127.0.0.1:9000 IMRAY_S3_BUCKET=imray-test
  export IMRAY_NACOS_SERVER=127.0.0.1:8848
}
