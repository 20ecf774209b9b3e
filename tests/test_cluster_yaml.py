"""Checks cluster.yaml with Ray's own cluster-launcher validation (no Ray cluster is started).

cluster.yaml starts Ray through deploy/ray-node.sh (the script the multi-host harness starts its hosts
with); its `ray start` commands are checked by running cluster.yaml's lines with RAY_NODE_DRY_RUN=1,
which prints the environment and the command instead of running them.

Order matters, as in `ray up` (ray.autoscaler._private.commands._bootstrap_config):
`prepare_config` first (for a `local` provider it builds the single node type from
head_ip/worker_ips and fills in defaults.yaml), then `validate_config` (JSON schema plus
checks that need the filled-in defaults, e.g. `cluster_synced_files`).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_YAML = ROOT / "cluster.yaml"
NODE_SCRIPT = "~/imray/deploy/ray-node.sh"  # where file_mounts puts the checkout's script
RAY_PORT = 6380  # 6379 is Redis's
VENV = "~/imray-venv"


def _load() -> dict[str, Any]:
    with CLUSTER_YAML.open() as f:
        return yaml.safe_load(f)


def _prepared(config: dict[str, Any]) -> dict[str, Any]:
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _ray_start(commands: list[str]) -> list[str]:
    """The commands that start Ray: through the node script (or a bare `ray start`, in the checks
    below that these checks can fail)."""
    return [c for c in commands if NODE_SCRIPT in c or re.search(r"\bray start\b", c)]


HEALTH_CHECK = ("RAY_health_check_period_ms", "RAY_health_check_timeout_ms", "RAY_health_check_failure_threshold")


@dataclass(frozen=True)
class DryRun:
    env: dict[str, str]
    argv: list[str]


def _dry_run(command: str, head_ip: str) -> DryRun:
    """What cluster.yaml's line would run on a node: the script's environment and `ray start` argv."""
    assert NODE_SCRIPT in command, command
    local = command.replace(NODE_SCRIPT, shlex.quote(str(ROOT / "deploy" / "ray-node.sh")))
    env = {**os.environ, "RAY_NODE_DRY_RUN": "1", "RAY_HEAD_IP": head_ip, "IMRAY_VENV": sys.prefix,
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    for own in ("FORWARDED_ALLOW_IPS", "RAY_AUTH_MODE", *HEALTH_CHECK):  # what the script sets, not the caller
        env.pop(own, None)
    done = subprocess.run(["bash", "-c", local], env=env, capture_output=True, text=True, timeout=60, check=True)
    *env_lines, command_line = done.stdout.strip().splitlines()
    return DryRun(dict(line.split("=", 1) for line in env_lines), shlex.split(command_line))


def _flag(argv: list[str], name: str) -> str:
    values = [t.split("=", 1)[1] for t in argv if t.startswith(f"--{name}=")]
    assert len(values) == 1, f"expected exactly one --{name}= in {argv!r}"
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


def _is_ray_stop(command: str) -> bool:
    return command.strip() in ("ray stop", f"{VENV}/bin/ray stop")


def test_worker_commands_are_strings_and_start_a_worker_node(prepared: dict[str, Any]) -> None:
    commands = prepared["worker_start_ray_commands"]
    assert all(isinstance(c, str) for c in commands), commands
    starts = _ray_start(commands)
    assert len(starts) == 1, commands
    assert shlex.split(starts[0])[:4] == ["bash", NODE_SCRIPT, "worker", "$RAY_HEAD_IP"], starts[0]
    # Only `ray stop` may precede it.
    assert all(c == starts[0] or _is_ray_stop(c) for c in commands), commands


def test_worker_joins_the_head_with_one_socket_node(raw: dict[str, Any], prepared: dict[str, Any]) -> None:
    (start,) = _ray_start(prepared["worker_start_ray_commands"])
    head_ip = raw["provider"]["head_ip"]
    run = _dry_run(start, head_ip)
    assert run.argv[:2] == ["ray", "start"] and "--head" not in run.argv
    assert json.loads(_flag(run.argv, "resources")) == {"socket_node": 1}
    assert _flag(run.argv, "address") == f"{head_ip}:{RAY_PORT}"


def test_head_command_uses_port_6380(raw: dict[str, Any], prepared: dict[str, Any]) -> None:
    commands = prepared["head_start_ray_commands"]
    assert all(isinstance(c, str) for c in commands), commands
    (start,) = _ray_start(commands)
    assert shlex.split(start)[:3] == ["bash", NODE_SCRIPT, "head"], start
    run = _dry_run(start, raw["provider"]["head_ip"])
    assert run.argv[:3] == ["ray", "start", "--head"]
    assert _flag(run.argv, "port") == str(RAY_PORT)
    assert _flag(run.argv, "dashboard-host") == "0.0.0.0"
    assert _flag(run.argv, "autoscaling-config") == "~/ray_bootstrap_config.yaml"
    assert not any("socket_node" in a for a in run.argv)  # the head hosts no socket-node actor
    assert _is_ray_stop(commands[0]) and commands.index(start) > 0


def test_setup_installs_imray_into_a_virtual_environment(prepared: dict[str, Any]) -> None:
    # prepare_config merges setup_commands into both head and worker setup. Debian 12 and later
    # refuse a system-wide pip install (PEP 668): everything goes into the venv the script uses.
    for key in ("head_setup_commands", "worker_setup_commands"):
        commands = prepared[key]
        made = [i for i, c in enumerate(commands) if shlex.split(c) == ["python3", "-m", "venv", VENV]]
        assert len(made) == 1, commands
        installs = [i for i, c in enumerate(commands) if "pip install" in c]
        assert installs and all(shlex.split(commands[i])[0] == f"{VENV}/bin/pip" for i in installs), commands
        assert made[0] < min(installs), commands
        assert any(c.endswith("pip install ~/imray") for c in commands), commands


def test_every_node_starts_ray_with_token_auth(raw: dict[str, Any], prepared: dict[str, Any]) -> None:
    # Without it the dashboard (on 0.0.0.0) and the GCS run code for anyone who reaches them.
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = _ray_start(prepared[key])
        assert _dry_run(start, raw["provider"]["head_ip"]).env["RAY_AUTH_MODE"] == "token", start


def test_the_head_declares_a_lost_host_dead_sooner_than_rays_defaults(raw: dict[str, Any],
                                                                      prepared: dict[str, Any]) -> None:
    # A lost worker's socket node and shards are relaunched only once the GCS declares it dead: with
    # Ray's defaults (every 3 s, 5 failures, 10 s timeout) that took 15-20 s on the multi-host harness.
    # The multi-host harness cuts a host off for 20 s and requires it not to count as lost.
    (start,) = _ray_start(prepared["head_start_ray_commands"])
    env = _dry_run(start, raw["provider"]["head_ip"]).env
    period, timeout, failures = (int(env[name]) for name in HEALTH_CHECK)
    assert period * failures <= 8000, env  # a host whose ports refuse: dead in ~7 s
    # A host that drops packets: each check waits out its timeout. A 20 s cut cost 5 failed checks.
    assert failures >= 7 and (timeout + period) * failures >= 35000, env


def test_gateway_replicas_on_workers_trust_forwarded_headers_from_the_head(raw: dict[str, Any],
                                                                           prepared: dict[str, Any]) -> None:
    # HTTP enters through Serve's proxy on the head; a replica on a worker sees the head's address.
    head_ip = raw["provider"]["head_ip"]
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = _ray_start(prepared[key])
        trusted = _dry_run(start, head_ip).env["FORWARDED_ALLOW_IPS"].split(",")
        assert head_ip in trusted or key.startswith("head"), trusted
        assert set(trusted) <= {head_ip, "127.0.0.1"} or key.startswith("head"), trusted
        assert "*" not in trusted, trusted


def test_the_token_reaches_every_node_privately(raw: dict[str, Any], prepared: dict[str, Any]) -> None:
    # Ray's default token path on each node, from the same path where `ray get-auth-token --generate`
    # wrote it on the machine running `ray up`; readable by its owner only.
    assert raw["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert "chmod 600 ~/.ray/auth_token" in prepared[key], prepared[key]
    assert "ray get-auth-token --generate" in CLUSTER_YAML.read_text()


def test_the_node_script_is_shipped_with_the_checkout(raw: dict[str, Any]) -> None:
    assert raw["file_mounts"]["~/imray"] == "."
    assert (ROOT / "deploy" / "ray-node.sh").is_file()


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
