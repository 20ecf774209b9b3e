#!/usr/bin/env bash
# Install the middleware the real-stack tests need, outside any network namespace (it downloads).
# Idempotent and cached: a second run on the same machine downloads nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
need=()
command -v mariadbd >/dev/null || need+=(mariadb-server)
command -v redis-server >/dev/null || need+=(redis-server)
# To build mysqlclient (requirements-mysql.txt), the C driver the real stack runs on.
pkg-config --exists libmariadb 2>/dev/null || need+=(libmariadb-dev pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian starts the services it installs; imray's tests run their own on loopback in a namespace.
for svc in mariadb redis-server; do
  command -v systemctl >/dev/null && systemctl stop "$svc" 2>/dev/null || true
  service "$svc" stop >/dev/null 2>&1 || true
done
"$here/s3/start.sh" --install-only          # s3s-fs from crates.io, built once into ~/.cache/imray
"$here/nacos/start.sh" --fetch-only         # Nacos server jars from Maven Central, cached
"$here/../deploy/k8s/validate.sh" --fetch-only  # kubeconform and KubeRay's CRDs (Go module proxy), cached
# nginx terminates TLS in front of the gateway and the socket nodes in tests/test_tls_proxy.py. Debian 12
# has nginx-light (the smallest build with ssl and the WebSocket-capable proxy); later releases ship only nginx.
if ! command -v nginx >/dev/null && ! [ -x /usr/sbin/nginx ]; then
  echo "installing nginx (Debian package)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null 2>&1 \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null
  # The test runs its own nginx on loopback in a namespace; the distribution's service stays off.
  command -v systemctl >/dev/null && systemctl stop nginx 2>/dev/null || true
  service nginx stop >/dev/null 2>&1 || true
fi
# The browser tests (tests/test_web_app.py) drive Debian's Chromium headless through Playwright.
if ! command -v chromium >/dev/null; then
  echo "installing chromium (Debian package)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
