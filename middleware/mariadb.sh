#!/usr/bin/env bash
# MariaDB as a local process on 127.0.0.1:3306 (no system service): mariadb.sh start|stop STATE_DIR
# (MARIADB_PORT=N for another port, as the database tests' private server does; MARIADB_BIND=ADDR to
# listen on another address, with MARIADB_CLIENTS='10.77.0.%' for the hosts that may log in from
# elsewhere, as the multi-host harness does; MARIADB_OPTS='--opt=value ...' for more server options,
# which win over the ones below).
# Creates database `imray` and user imray/imray-test on first start. Run inside the test namespace.
set -euo pipefail
action=$1 state=$(realpath -m "$2")
sock=$state/mysqld.sock
port=${MARIADB_PORT:-3306}
bind=${MARIADB_BIND:-127.0.0.1}
clients=${MARIADB_CLIENTS:-}
case $action in
start)
  command -v mariadbd >/dev/null || { echo "mariadb-server is not installed: run middleware/install.sh first" >&2; exit 1; }
  mkdir -p "$state"
  if [ ! -d "$state/data/mysql" ]; then
    mariadb-install-db --user=root --datadir="$state/data" --auth-root-authentication-method=socket \
      --skip-test-db >"$state/install.log" 2>&1
  fi
  mariadbd --user=root --datadir="$state/data" --socket="$sock" --port="$port" --bind-address="$bind" \
    --pid-file="$state/mysqld.pid" --log-error="$state/mysqld.log" --skip-name-resolve \
    --innodb-buffer-pool-size=128M --innodb-flush-log-at-trx-commit=1 --max-connections=500 ${MARIADB_OPTS:-} &
  for _ in $(seq 1 120); do
    mariadb-admin --socket="$sock" ping >/dev/null 2>&1 && break
    sleep 0.5
  done
  mariadb-admin --socket="$sock" ping >/dev/null || { tail -20 "$state/mysqld.log"; exit 1; }
  mariadb --socket="$sock" <<'SQL'
CREATE DATABASE IF NOT EXISTS imray CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE USER IF NOT EXISTS 'imray'@'127.0.0.1' IDENTIFIED BY 'imray-test';
CREATE USER IF NOT EXISTS 'imray'@'localhost' IDENTIFIED BY 'imray-test';
GRANT ALL ON *.* TO 'imray'@'127.0.0.1';
GRANT ALL ON *.* TO 'imray'@'localhost';
SQL
  if [ -n "$clients" ]; then
    mariadb --socket="$sock" -e "CREATE USER IF NOT EXISTS 'imray'@'$clients' IDENTIFIED BY 'imray-test';
      GRANT ALL ON *.* TO 'imray'@'$clients';"
  fi
  echo "mariadb $(mariadb --socket="$sock" -N -e 'select version()') on $bind:$port"
  ;;
stop)
  [ -f "$state/mysqld.pid" ] && mariadb-admin --socket="$sock" shutdown 2>/dev/null || true
  ;;
*) echo "usage: $0 start|stop STATE_DIR" >&2; exit 2 ;;
esac
