#!/usr/bin/env bash
# Build the web app into imray/webapp (served by the gateway at /app), after clients/js/build.sh:
# the SDK's dist is copied beside the app (the browser imports it by relative path) and into src/sdk
# (for tsc's types). Idempotent: skips npm ci and tsc when their outputs are newer than their inputs.
set -euo pipefail
cd "$(dirname "$0")"
out=../../imray/webapp
sdk=../js/dist
[ -f "$sdk/index.js" ] || { echo "clients/web/build.sh: build the SDK first (clients/js/build.sh)" >&2; exit 1; }
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi
# The SDK copy for the types, refreshed when its dist changed.
if [ ! -f src/sdk/index.js ] || [ -n "$(find "$sdk" -type f -newer src/sdk/index.js | head -n 1)" ]; then
  rm -rf src/sdk && mkdir -p src/sdk && cp -p "$sdk"/*.js "$sdk"/*.d.ts src/sdk/
  touch src/sdk/index.js
fi
newest=$(find src tsconfig.json package-lock.json -type f -newer "$out/main.js" 2>/dev/null | head -n 1 || true)
if [ ! -f "$out/main.js" ] || [ -n "$newest" ]; then
  rm -rf "$out"
  node_modules/.bin/tsc -p tsconfig.json
  mkdir -p "$out/sdk"
  cp src/sdk/*.js "$out/sdk/"
  cp src/index.html src/style.css "$out/"
fi
