#!/usr/bin/env bash
# Build the TypeScript SDK into clients/js/dist (idempotent: skips npm ci and tsc when up to date).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi
newest_source=$(find src tsconfig.json package-lock.json -type f -newer dist/index.js 2>/dev/null | head -n 1 || true)
if [ ! -f dist/index.js ] || [ -n "$newest_source" ]; then
  rm -rf dist
  node_modules/.bin/tsc -p tsconfig.json
fi
