"""imray as a Ray Serve application builder (issue 20): `serve run imray.app:build`, a Serve config
file's `import_path: imray.app:build`, or KubeRay's RayService (deploy/k8s/rayservice.yaml).

The builder does what `imray up` does on a cluster it joins: schema migrations and the signing
keyring (`runtime.prepare`), then the supervisor with the socket nodes, shards and presence, and
returns the HTTP side as one application (`runtime.assemble`, which `imray up` and the test suite
run too). Settings come from the IMRAY_* environment and, optionally, a YAML file named by the
`config` argument (`serve run imray.app:build config=/etc/imray/imray.yaml`).
"""

from __future__ import annotations

from ray.serve import Application

from imray import runtime
from imray.settings import load_settings

ARGS = ("config",)


def build(args: dict[str, str]) -> Application:
    unknown = sorted(set(args) - set(ARGS))
    if unknown:
        raise ValueError(f"unknown arguments {unknown}: imray.app:build takes {list(ARGS)} (settings go in "
                         "IMRAY_* variables or the config file)")
    settings = load_settings(args.get("config"))
    keys = runtime.prepare(settings)
    _deployed, _nodes, application = runtime.assemble(settings, keys)
    return application
