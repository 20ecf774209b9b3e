#!/usr/bin/env bash
# Validate deploy/k8s/*.yaml (or the files given) with kubeconform against KubeRay's CRD schema (issue 20).
#   deploy/k8s/validate.sh --fetch-only   kubeconform (go install) and KubeRay's CRDs (go mod download),
#                                         cached under ~/.cache/imray/k8s: run where the Go proxy is reachable
#   deploy/k8s/validate.sh [FILE...]      validate offline with what was fetched
# Kinds with a schema here (RayService, RayCluster, RayJob) are validated strictly (unknown fields are
# errors); core kinds (ConfigMap) are skipped: their schemas live on GitHub, which this box cannot reach.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache="${IMRAY_K8S_CACHE:-$HOME/.cache/imray/k8s}"
KUBECONFORM_VERSION=v0.6.7
KUBERAY_VERSION=v1.5.0
mkdir -p "$cache"
py="$here/../../.venv/bin/python"  # PyYAML is imray's; the system's Python may lack it
[ -x "$py" ] || py=python3
export GOPATH="$cache/go" GOFLAGS=-mod=mod GOTOOLCHAIN=local
if [ ! -x "$cache/go/bin/kubeconform" ] || [ ! -f "$cache/schemas/rayservice_v1.json" ]; then
  [ "${1:-}" = --fetch-only ] || { echo "run $0 --fetch-only first (it downloads)" >&2; exit 2; }
  echo "fetching kubeconform $KUBECONFORM_VERSION and KubeRay $KUBERAY_VERSION's CRDs (Go module proxy)"
  go install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
  crds=$(go mod download -json "github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION" \
    | "$py" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')/config/crd/bases
  "$py" "$here/crd_schemas.py" "$cache/schemas" "$crds"/ray.io_*.yaml
fi
[ "${1:-}" = --fetch-only ] && exit 0
[ $# -gt 0 ] || set -- "$here"/*.yaml
exec "$cache/go/bin/kubeconform" -strict -summary -ignore-missing-schemas \
  -schema-location "$cache/schemas/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" "$@"
