"""The Kubernetes path (issue 20): the RayService manifest is valid against KubeRay's CRD schema
(kubeconform, strict), its Serve config is the one in deploy/serve-config.yaml and valid for Serve,
the Dockerfile's Ray is requirements.txt's, and Serve finds the app builder by its import path."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from ray._common.utils import import_attr
from ray.serve.schema import ServeDeploySchema

from imray.localcluster import ENV_DEFAULTS, ray_environment
from imray.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
VALIDATE = ROOT / "deploy" / "k8s" / "validate.sh"
MANIFEST = ROOT / "deploy" / "k8s" / "rayservice.yaml"


def _validate(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VALIDATE), *map(str, files)], capture_output=True, text=True, timeout=120, check=False)


def test_the_rayservice_manifest_is_valid_for_kuberay_and_a_wrong_field_is_caught(tmp_path: Path) -> None:
    done = _validate(MANIFEST)
    assert done.returncode == 0, done.stdout + done.stderr  # rc 2: `deploy/k8s/validate.sh --fetch-only` first
    assert "Valid: 1, Invalid: 0" in done.stdout, done.stdout  # the RayService; the ConfigMap has no schema here
    broken = tmp_path / "broken.yaml"
    text = MANIFEST.read_text()
    broken.write_text(text.replace("        replicas: 2\n", "        replicas: 2\n        replica: 3\n"))
    done = _validate(broken)
    assert done.returncode == 1 and "additionalProperties 'replica' not allowed" in done.stdout, done.stdout


def test_the_serve_config_is_valid_and_the_same_in_the_manifest() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "serve-config.yaml").read_text())
    ServeDeploySchema.parse_obj(config)
    [service] = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d["kind"] == "RayService"]
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == config
    assert service["spec"]["rayClusterConfig"]["rayVersion"] == _ray_version()


def test_the_image_is_built_on_the_ray_imray_runs() -> None:
    image = re.search(r"^FROM rayproject/ray:([0-9.]+)-py311$", (ROOT / "deploy" / "Dockerfile").read_text(), re.M)
    assert image is not None and image.group(1) == _ray_version()


def test_serve_finds_the_app_builder_and_it_refuses_unknown_arguments() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "serve-config.yaml").read_text())
    build = import_attr(config["applications"][0]["import_path"])
    with pytest.raises(ValueError, match="unknown arguments"):
        build({"databse_url": "sqlite://"})


def _ray_version() -> str:
    found = re.search(r"^ray\[serve\]==([0-9.]+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert found is not None
    return found.group(1)


def test_every_pod_gets_the_environment_imray_sets_for_ray_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """KubeRay runs `ray start` itself, so the manifest carries what `imray ray-env` gives a machine
    (workers at nice 0, Serve's throughput mode, the Python proxy's limits): the same values."""
    for name in (*ENV_DEFAULTS, "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", "IMRAY_HTTP_REQUEST_TIMEOUT_S",
                 "IMRAY_HTTP_CONNECTIONS_PER_ADDRESS", "IMRAY_HTTP_MAX_CONNECTIONS"):
        monkeypatch.delenv(name, raising=False)  # the defaults, not this machine's overrides
    wanted = ray_environment(Settings(serve_haproxy=False))
    [service] = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d["kind"] == "RayService"]
    cluster = service["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for pod in pods:
        [container] = pod["template"]["spec"]["containers"]
        assert {e["name"]: e["value"] for e in container["env"]} == wanted, container["name"]
    assert wanted["RAY_worker_niceness"] == "0"
