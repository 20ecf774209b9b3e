"""compose.yml as operators run it with deploy/imray.env.example: no secret is fixed in it, Redis asks for a
password, Nacos has auth on, and what imray reads from the env file matches what the services were given.

There is no Docker Compose here: variables are substituted as Compose does (${VAR}, ${VAR:-default},
${VAR:?error}, $$ for a literal $), and the shell commands are checked with `sh -n`.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / "imray.env.example"
_VAR = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}")
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "IDENTITY_VALUE", "REDISCLI_AUTH")


class Unset(Exception):
    """A ${VAR:?message} whose variable is unset or empty: Compose refuses to start."""


def interpolate(text: str, env: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = env.get(name)
        if op in (":?", "?") and not value:
            raise Unset(f"{name}: {arg}")
        if op in (":-", "-") and not value:
            return arg
        return value or ""
    return _VAR.sub(one, text)


def env_file() -> dict[str, str]:
    lines = [ln for ln in ENV_EXAMPLE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return dict(ln.split("=", 1) for ln in lines)


def resolved(env: dict[str, str]) -> dict[str, Any]:
    """compose.yml with every string substituted, as `docker compose --env-file ... config` shows it."""
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return interpolate(node, env) if isinstance(node, str) else node
    return walk(yaml.safe_load(COMPOSE.read_text()))


def raw_services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_every_secret_in_compose_comes_from_a_required_variable() -> None:
    for service, spec in raw_services().items():
        for name, value in (spec.get("environment") or {}).items():
            if any(word in name for word in SECRET_WORDS):
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", str(value)), f"{service}.{name} = {value!r}"


def test_compose_refuses_to_start_without_the_secrets() -> None:
    with pytest.raises(Unset):
        resolved({})
    for name in ("IMRAY_REDIS_PASSWORD", "IMRAY_S3_SECRET_KEY", "IMRAY_NACOS_PASSWORD", "NACOS_AUTH_TOKEN",
                 "IMRAY_DB_PASSWORD"):
        env = env_file()
        env[name] = ""
        with pytest.raises(Unset, match=name):
            resolved(env)


def test_the_env_example_starts_compose() -> None:
    services = resolved(env_file())["services"]
    assert {"mysql", "redis", "minio", "minio-init", "nacos", "nacos-init"} <= set(services)


def test_redis_asks_for_the_password_imray_sends() -> None:
    env = env_file()
    redis = resolved(env)["services"]["redis"]
    command = redis["command"]
    assert command[:2] == ["sh", "-c"] and '--requirepass "$REDISCLI_AUTH"' in command[2]
    password = redis["environment"]["REDISCLI_AUTH"]  # also what redis-cli, the health check, sends
    assert password and password == urlsplit(env["IMRAY_REDIS_URL"]).password
    subprocess.run(["sh", "-n", "-c", command[2]], check=True)


def test_nacos_has_auth_on_and_imray_logs_in_with_the_password_nacos_init_sets() -> None:
    env = env_file()
    services = resolved(env)["services"]
    nacos = services["nacos"]["environment"]
    assert nacos["NACOS_AUTH_ENABLE"] == "true"
    assert nacos["NACOS_AUTH_TOKEN"] and nacos["NACOS_AUTH_IDENTITY_KEY"] and nacos["NACOS_AUTH_IDENTITY_VALUE"]
    init = services["nacos-init"]
    assert init["environment"]["NACOS_NEW_PASSWORD"] == env["IMRAY_NACOS_PASSWORD"] != "nacos"
    assert init["environment"]["NACOS_URL"] == "http://nacos:8848/nacos"
    assert env["IMRAY_NACOS_USERNAME"] == "nacos"
    assert init["depends_on"]["nacos"]["condition"] == "service_healthy"


def test_nacos_init_runs_the_tested_script_from_deploy() -> None:
    """The script tests/test_real_nacos_auth.py runs against a Nacos with auth on, mounted read-only."""
    init = resolved(env_file())["services"]["nacos-init"]
    source, target, mode = init["volumes"][0].split(":")
    assert (COMPOSE.parent / source).resolve() == ROOT / "deploy" / "nacos-init.sh" and mode == "ro"
    assert init["entrypoint"] == ["/bin/sh", target] and "command" not in init
    subprocess.run(["sh", "-n", str(ROOT / "deploy" / "nacos-init.sh")], check=True)


def test_minio_runs_on_the_key_pair_imray_signs_with() -> None:
    env = env_file()
    services = resolved(env)["services"]
    for service in ("minio", "minio-init"):
        assert services[service]["environment"]["MINIO_ROOT_USER"] == env["IMRAY_S3_ACCESS_KEY"]
        assert services[service]["environment"]["MINIO_ROOT_PASSWORD"] == env["IMRAY_S3_SECRET_KEY"]
    assert len(env["IMRAY_S3_SECRET_KEY"]) >= 8  # MinIO's minimum


def test_mysql_users_password_is_the_one_in_imrays_database_url() -> None:
    env = env_file()
    mysql = resolved(env)["services"]["mysql"]["environment"]
    assert mysql["MYSQL_PASSWORD"] == urlsplit(env["IMRAY_DATABASE_URL"]).password


def test_no_literal_secret_is_written_in_compose() -> None:
    text = COMPOSE.read_text()
    assert "change-me" not in text and "minioadmin" not in text
    assert re.search(r'--requirepass "\$\$\w+"', text)  # Redis's password is a variable, never a literal
