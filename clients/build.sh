#!/usr/bin/env bash
# Build the clients (run by `make install`, so by `make run` and `make test`): the TypeScript SDK
# into clients/js/dist, then the web app into imray/webapp (served by the gateway at /app).
# Needs Node.js 20+ and npm; each step skips work that is already done.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
command -v npm >/dev/null || { echo "clients/build.sh: Node.js 20+ and npm are needed to build the clients" >&2; exit 1; }
for step in "$here/js/build.sh" "$here/web/build.sh"; do
  if [ -x "$step" ]; then "$step"; fi
done
