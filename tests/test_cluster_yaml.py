"""Checks cluster.yaml with Ray's own cluster-launcher validation (no Ray cluster is started).

Order matters, as in `ray up` (ray.autoscaler._private.commands._bootstrap_config):
`prepare_config` first (for a `local` provider it builds the single node type from
head_ip/worker_ips and fills in defaults.yaml), then `validate_config` (JSON schema plus
checks that need the filled-in defaults, e.g. `cluster_synced_files`).
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parent.parent / "cluster.yaml"
RAY_PORT = 6380  # 6379 is Redis's


def _load() -> dict[str, Any]:
    with CLUSTER_YAML.open() as f:
        return yaml.safe_load(f)


def _prepared(config: dict[str, Any]) -> dict[str, Any]:
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _ray_start(commands: list[str]) -> list[str]:
    return [c for c in commands if re.search(r"\bray start\b", c)]


def _flag(command: str, name: str) -> str:
    values = [t.split("=", 1)[1] for t in shlex.split(command) if t.startswith(f"--{name}=")]
    assert len(values) == 1, f"expected exactly one --{name}= in {command!r}"
    return values[0]


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return _load()


@pytest.fixture(scope="module")
def prepared(raw: dict[str, Any]) -> dict[str, Any]:
    return _prepared(raw)


def test_ray_accepts_config(prepared: dict[str, Any]) -> None:
    assert prepared["cluster_name"] == "imray"
    assert prepared["provider"]["type"] == "local"
    assert prepared["auth"]["ssh_user"]


def test_worker_ips_match_worker_counts(raw: dict[str, Any], prepared: dict[str, Any]) -> None:
    ips = raw["provider"]["worker_ips"]
    assert len(ips) == len(set(ips)) > 0
    assert raw["provider"]["head_ip"] not in ips
    assert len(ips) == raw["max_workers"] == raw["min_workers"]
    # What the autoscaler will actually use after prepare_config:
    node_type = prepared["available_node_types"][prepared["head_node_type"]]
    assert node_type["min_workers"] == node_type["max_workers"] == len(ips)


def test_placeholder_addresses_are_documentation_range(raw: dict[str, Any]) -> None:
    provider = raw["provider"]
    for ip in [provider["head_ip"], *provider["worker_ips"]]:
        assert ip.startswith("192.0.2."), ip  # RFC 5737 TEST-NET-1
    assert "REPLACE" in CLUSTER_YAML.read_text()


def test_worker_commands_are_strings_and_request_socket_node(prepared: dict[str, Any]) -> None:
    commands = prepared["worker_start_ray_commands"]
    assert all(isinstance(c, str) for c in commands), commands
    starts = _ray_start(commands)
    assert len(starts) == 1, commands
    assert "socket_node" in starts[0]
    # Only `ray stop` may precede it without the resource.
    assert all("socket_node" in c or c.strip() == "ray stop" for c in commands), commands


def test_worker_resources_json_is_one_socket_node(prepared: dict[str, Any]) -> None:
    (start,) = _ray_start(prepared["worker_start_ray_commands"])
    assert json.loads(_flag(start, "resources")) == {"socket_node": 1}
    assert _flag(start, "address") == f"$RAY_HEAD_IP:{RAY_PORT}"


def test_head_command_uses_port_6380(prepared: dict[str, Any]) -> None:
    commands = prepared["head_start_ray_commands"]
    assert all(isinstance(c, str) for c in commands), commands
    (start,) = _ray_start(commands)
    tokens = shlex.split(start)
    assert "--head" in tokens
    assert _flag(start, "port") == str(RAY_PORT)
    assert _flag(start, "dashboard-host") == "0.0.0.0"
    assert _flag(start, "autoscaling-config") == "~/ray_bootstrap_config.yaml"
    assert "socket_node" not in start  # the head hosts no socket-node actor
    assert commands.index("ray stop") < commands.index(start)


def test_setup_installs_imray(prepared: dict[str, Any]) -> None:
    # prepare_config merges setup_commands into both head and worker setup.
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert any("pip install" in c and "imray" in c for c in prepared[key]), prepared[key]


def _runs_with_token_auth(command: str) -> bool:
    """RAY_AUTH_MODE=token is in the environment `ray start` runs in (set earlier in the same line)."""
    before = command[:re.search(r"\bray start\b", command).start()]
    return re.search(r"(^|&&|;|\s)(export\s+)?RAY_AUTH_MODE=token(\s|&&|;)", before) is not None


def test_every_node_starts_ray_with_token_auth(prepared: dict[str, Any]) -> None:
    # Without it the dashboard (on 0.0.0.0) and the GCS run code for anyone who reaches them.
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = _ray_start(prepared[key])
        assert _runs_with_token_auth(start), start


def test_the_token_reaches_every_node_privately(raw: dict[str, Any], prepared: dict[str, Any]) -> None:
    # Ray's default token path on each node, from the same path where `ray get-auth-token --generate`
    # wrote it on the machine running `ray up`; readable by its owner only.
    assert raw["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert "chmod 600 ~/.ray/auth_token" in prepared[key], prepared[key]
    assert "ray get-auth-token --generate" in CLUSTER_YAML.read_text()


# --- the checks above can fail -------------------------------------------------------------

_UNQUOTED_WORKER_CMD = """
worker_start_ray_commands:
  - ray stop
  - ray start --address=$RAY_HEAD_IP:6380 --resources='{"socket_node": 1}'
"""


def test_unquoted_resources_becomes_mapping_and_is_rejected(raw: dict[str, Any]) -> None:
    broken = copy.deepcopy(raw)
    broken.update(yaml.safe_load(_UNQUOTED_WORKER_CMD))
    # The exact mistake the quoting in cluster.yaml avoids: YAML turns the line into a dict.
    assert isinstance(broken["worker_start_ray_commands"][1], dict)
    with pytest.raises(jsonschema.ValidationError):
        _prepared(broken)


def test_missing_provider_is_rejected(raw: dict[str, Any]) -> None:
    broken = copy.deepcopy(raw)
    del broken["provider"]
    with pytest.raises((jsonschema.ValidationError, KeyError)):
        _prepared(broken)
    # The JSON schema alone also requires it (validate_config also needs defaults filled in,
    # hence the full prepare-then-validate path above; here only the schema part is checked).
    with pytest.raises(jsonschema.ValidationError, match="'provider' is a required property"):
        validate_config({**broken, "cluster_synced_files": []})


def test_token_auth_check_tells_a_start_without_it() -> None:
    assert _runs_with_token_auth('export RAY_AUTH_MODE=token && eval "$(imray ray-env)" && ray start --head')
    assert _runs_with_token_auth("RAY_AUTH_MODE=token ray start --head")
    assert not _runs_with_token_auth('eval "$(imray ray-env)" && ray start --head')
    assert not _runs_with_token_auth("export RAY_AUTH_MODE=disabled && ray start --head")
    assert not _runs_with_token_auth("ray start --head && export RAY_AUTH_MODE=token")
