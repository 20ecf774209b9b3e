"""CRDs to the JSON schemas kubeconform reads: one file per kind and version (`rayservice_v1.json`).

Each version's openAPIV3Schema becomes a JSON schema; objects that list their properties refuse
others (as the API server prunes unknown fields, kubeconform -strict reports them), except where the
CRD keeps unknown fields (x-kubernetes-preserve-unknown-fields). `int-or-string` is either.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


def strict(node: Any) -> Any:
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) for k, v in node.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    return out


def main(target: str, crds: list[str]) -> None:
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    for path in crds:
        crd = yaml.safe_load(Path(path).read_text())
        kind = crd["spec"]["names"]["kind"].lower()
        for version in crd["spec"]["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            # apiVersion, kind and metadata are the API server's, whatever the CRD says of them.
            schema["properties"].update({"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                         "metadata": {"type": "object"}})
            (out / f"{kind}_{version['name']}.json").write_text(json.dumps(schema))
            print(f"{kind}_{version['name']}.json")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
