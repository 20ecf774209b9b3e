#!/usr/bin/env bash
# Start a local, standalone Nacos 2.3.2 server (embedded Derby; auth off unless NACOS_AUTH=1) for imray's tests.
#
#   middleware/nacos/start.sh STATE_DIR      fetch the jars if needed, start, wait until ready
#   middleware/nacos/start.sh --fetch-only   only fetch the jars (needs Maven Central)
#   middleware/nacos/stop.sh STATE_DIR
#
# The server is Alibaba's own main class (com.alibaba.nacos.Nacos, shipped in nacos-console) from the
# modules that JeecgBoot republishes on Maven Central (see pom.xml); no code of ours runs in it.
# HTTP listens on $NACOS_HOST:$NACOS_PORT (127.0.0.1:8848, context /nacos); Nacos derives the other ports from it:
# client gRPC +1000 (9848), cluster gRPC +1001 (9849), Raft -1000 (7848). Nacos 2.3 binds those three
# on all interfaces (no option for an address), so run this inside a loopback-only network namespace
# (scripts/netns-run). This script never enters one itself.
#
# Jars are cached in $NACOS_CACHE_DIR (default ~/.cache/imray/nacos/<hash of pom.xml>); the first
# fetch needs the network (~150 MB), so inside a namespace warm the cache first with --fetch-only.
# Everything the server writes (Derby data, logs, pid) goes under STATE_DIR.
#
# Environment: NACOS_HOST (127.0.0.1: the address it binds and advertises), NACOS_PORT (8848), NACOS_JAVA_OPTS ("-Xms256m -Xmx512m"),
#              NACOS_READY_TIMEOUT (180 seconds), NACOS_CACHE_DIR, JAVA (java), MVN (mvn).
#
# Auth is off unless NACOS_AUTH=1, which starts it as compose.yml's Nacos runs: clients log in (the
# built-in user is nacos / nacos until deploy/nacos-init.sh changes it), tokens are signed with
# NACOS_AUTH_TOKEN (base64 of >= 32 bytes) and servers know each other by NACOS_AUTH_IDENTITY_KEY /
# NACOS_AUTH_IDENTITY_VALUE. Those not given are generated once per STATE_DIR (kept in its auth.env) and
# reach the JVM in a properties file readable only by its owner, never on its command line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pom="$here/pom.xml"
host="${NACOS_HOST:-127.0.0.1}"
port="${NACOS_PORT:-8848}"
grpc_port=$((port + 1000))
timeout="${NACOS_READY_TIMEOUT:-180}"
java_opts="${NACOS_JAVA_OPTS:--Xms256m -Xmx512m}"
JAVA="${JAVA:-java}"
MVN="${MVN:-mvn}"

die() { echo "nacos: $*" >&2; exit 1; }

fetch_only=0
if [ "${1:-}" = "--fetch-only" ]; then
  fetch_only=1
elif [ "$#" -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 STATE_DIR | --fetch-only" >&2
  exit 2
fi

# --- jars -------------------------------------------------------------------------------------
key="$(sha256sum "$pom" | cut -c1-12)"
cache="${NACOS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/imray/nacos}/$key"
lib="$cache/lib"
cpfile="$cache/classpath.txt"

fetch() {
  mkdir -p "$cache"
  local tmp="$cache/lib.partial"
  rm -rf "$tmp" "$lib" "$cpfile"
  local t0=$SECONDS
  echo "nacos: fetching server jars into $lib" >&2
  # Offline first (fast when ~/.m2 already holds them), then from Maven Central.
  local mode
  for mode in -o ""; do
    if $MVN -q -B $mode -f "$pom" dependency:copy-dependencies -DoutputDirectory="$tmp" >"$cache/mvn.log" 2>&1 \
       && $MVN -q -B $mode -f "$pom" dependency:build-classpath -Dmdep.outputFile="$cpfile.partial" \
        -Dmdep.prefix="$lib" >>"$cache/mvn.log" 2>&1; then
      mv "$tmp" "$lib"
      # Maven's order matters: both com.caucho:hessian 4.0.63 (used by nacos-consistency) and
      # com.alipay.sofa:hessian 3.3.6 (from jraft) hold com.caucho.hessian.*; the former must win,
      # as it does in Maven's resolution order. A `lib/*` wildcard gives no such order.
      mv "$cpfile.partial" "$cpfile"
      echo "nacos: fetched $(ls "$lib" | wc -l) jars, $(du -sh "$lib" | cut -f1), in $((SECONDS - t0)) s" >&2
      return 0
    fi
  done
  tail -n 30 "$cache/mvn.log" >&2
  die "could not fetch the jars (mvn log: $cache/mvn.log); Maven Central must be reachable for the first run"
}

[ -s "$cpfile" ] && [ -d "$lib" ] || fetch
[ "$fetch_only" = 1 ] && { echo "nacos: jars ready in $lib"; exit 0; }

# --- server -----------------------------------------------------------------------------------
state="$1"
mkdir -p "$state/logs"
state="$(cd "$state" && pwd)"
pidfile="$state/nacos.pid"
ready_url="http://$host:$port/nacos/v1/console/health/readiness"

# Alive = the pid in the pid file is still a JVM started for this state dir (not a reused pid).
alive() {
  [ -s "$pidfile" ] || return 1
  local args
  args="$(tr '\0' '\n' 2>/dev/null <"/proc/$(cat "$pidfile")/cmdline")" || return 1
  grep -qxF -- "-Dnacos.home=$state" <<<"$args"
}
ready() {
  curl -sf -m 2 -o /dev/null "$ready_url" && (exec 3<>"/dev/tcp/$host/$grpc_port") 2>/dev/null
}

# NACOS_AUTH=1: each secret comes from the environment, else from this state dir's auth.env, else is new
# (and saved there, so a restart on the same data keeps it).
random_base64() { head -c "$1" /dev/urandom | base64 -w0; }
auth_setting() {  # NAME COMMAND...
  local name="$1" value; shift
  value="${!name:-}"
  [ -n "$value" ] || value="$(sed -n "s/^$name=//p" "$state/auth.env")"
  if [ -z "$value" ]; then
    value="$("$@")"
    echo "$name=$value" >>"$state/auth.env"
  fi
  printf '%s' "${value//\\/\\\\}"  # a backslash is an escape in a properties file
}
write_auth_properties() {
  local token key value
  mkdir -p "$state/conf"
  (umask 077 && touch "$state/auth.env" "$state/conf/application.properties")
  token="$(auth_setting NACOS_AUTH_TOKEN random_base64 32)"
  key="$(auth_setting NACOS_AUTH_IDENTITY_KEY echo imray-nacos)"
  value="$(auth_setting NACOS_AUTH_IDENTITY_VALUE random_base64 24)"
  [ "$(printf '%s' "$token" | base64 -d 2>/dev/null | wc -c)" -ge 32 ] \
    || die "NACOS_AUTH_TOKEN must be base64 of 32 bytes or more"
  # Users are read from the database, not from a cache refreshed every 15 s (the nacos/nacos-server image's
  # default too).
  printf '%s\n' "nacos.core.auth.plugin.nacos.token.secret.key=$token" \
    "nacos.core.auth.server.identity.key=$key" "nacos.core.auth.server.identity.value=$value" \
    "nacos.core.auth.caching.enabled=false" \
    >"$state/conf/application.properties"
}

if alive; then
  echo "nacos: already running (pid $(cat "$pidfile"))" >&2
else
  rm -f "$pidfile"
  if curl -s -m 2 -o /dev/null "http://$host:$port/"; then
    die "port $port is already taken by another process"
  fi
  mkdir -p "$state/tmp"
  auth=false app_args=()
  if [ "${NACOS_AUTH:-0}" = 1 ]; then
    write_auth_properties
    # A folder, as upstream's startup.sh passes it: Nacos reads application.properties from the last one.
    auth=true app_args=("--spring.config.additional-location=file:$state/conf/")
  fi
  cd "$state"
  # nacos.home holds conf/ and data/ (Derby, Raft); logs and Tomcat's work dir go under it too.
  # shellcheck disable=SC2086
  # Derby's first connection has 3 s by default (Nacos's db.pool.config): under load (average 20+)
  # its first boot took longer and Nacos exited with "Login timeout exceeded".
  setsid "$JAVA" $java_opts \
    -Dnacos.standalone=true \
    -Ddb.pool.config.connectionTimeout=60000 \
    -Dnacos.core.auth.enabled="$auth" \
    -Dnacos.home="$state" \
    -Dnacos.logs.path="$state/logs" \
    -DJM.LOG.PATH="$state/logs" \
    -DJM.SNAPSHOT.PATH="$state" \
    -Dderby.stream.error.file="$state/logs/derby.log" \
    -Dnacos.inetutils.ip-address="$host" \
    -Dserver.address="$host" \
    -Dserver.port="$port" \
    -Dserver.tomcat.basedir="$state/tomcat" \
    -Dserver.tomcat.accesslog.enabled=false \
    -Djava.io.tmpdir="$state/tmp" \
    -cp "$(cat "$cpfile")" com.alibaba.nacos.Nacos "${app_args[@]}" \
    </dev/null >"$state/logs/stdout.log" 2>&1 &
  echo $! >"$pidfile"
  echo "nacos: started pid $(cat "$pidfile"), logs in $state/logs" >&2
fi

t0=$SECONDS
until ready; do
  if ! alive; then
    tail -n 40 "$state/logs/stdout.log" >&2 || true
    rm -f "$pidfile"
    die "the server exited before it was ready"
  fi
  if [ $((SECONDS - t0)) -ge "$timeout" ]; then
    tail -n 40 "$state/logs/stdout.log" >&2 || true
    die "not ready after ${timeout}s (still running as pid $(cat "$pidfile"); stop it with stop.sh)"
  fi
  sleep 0.5
done
echo "nacos: ready on $host:$port (gRPC $grpc_port) after $((SECONDS - t0)) s"
