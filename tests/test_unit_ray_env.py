"""The environment imray gives Ray for Serve's HAProxy ingress (no cluster needed)."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from imray import localcluster
from imray.settings import load_settings


def test_haproxy_goes_through_the_forwardfor_wrapper_to_a_real_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_SERVE_HAPROXY_BINARY_PATH", raising=False)
    env = localcluster.ray_environment(load_settings())
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert env["RAY_SERVE_HAPROXY_BINARY_PATH"] == str(localcluster.HAPROXY_WRAPPER)
    assert os.access(env["RAY_SERVE_HAPROXY_BINARY_PATH"], os.X_OK)  # the package ships it executable
    assert os.access(env["IMRAY_HAPROXY_BINARY"], os.X_OK)
    assert env["RAY_SERVE_HAPROXY_METRICS_PORT"] != str(load_settings().socket_base_port)


def test_an_environment_already_set_by_ray_env_does_not_point_the_wrapper_at_itself(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(localcluster.HAPROXY_WRAPPER))  # eval "$(imray ray-env)"
    env = localcluster.ray_environment(load_settings())
    assert env["IMRAY_HAPROXY_BINARY"] != str(localcluster.HAPROXY_WRAPPER)
    assert os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] == str(localcluster.HAPROXY_WRAPPER)  # left as it was


def test_without_a_usable_haproxy_or_when_off_serve_keeps_its_python_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_SERVE_THROUGHPUT_OPTIMIZED", raising=False)
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", "/nonexistent/haproxy")
    for name in localcluster.ENV_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    python_proxy = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
                    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000", "RAY_worker_niceness": "0",
                    "IMRAY_INGRESS_REQUEST_TIMEOUT_S": "10",
                    "IMRAY_INGRESS_CONNECTIONS_PER_ADDRESS": "256", "IMRAY_INGRESS_MAX_CONNECTIONS": "0",
                    # through Serve's proxy callback:
                    localcluster.PROXY_CALLBACK: localcluster.PROXY_LIMITS}
    assert localcluster.ray_environment(load_settings()) == python_proxy
    monkeypatch.delenv("RAY_SERVE_HAPROXY_BINARY_PATH")
    assert localcluster.ray_environment(load_settings(serve_haproxy=False)) == python_proxy


def test_serve_runs_in_its_throughput_mode_unless_the_operator_says_otherwise(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_SERVE_THROUGHPUT_OPTIMIZED", raising=False)
    assert localcluster.ray_environment(load_settings())["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    monkeypatch.setenv("RAY_SERVE_THROUGHPUT_OPTIMIZED", "0")
    assert localcluster.ray_environment(load_settings())["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "0"


def test_serves_background_loops_are_slowed_unless_the_operator_says_otherwise(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", raising=False)
    monkeypatch.setenv("RAY_SERVE_METRICS_EXPORT_INTERVAL_MS", "100")
    env = localcluster.ray_environment(load_settings())
    assert env["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"] == "0.5" and env["RAY_SERVE_METRICS_EXPORT_INTERVAL_MS"] == "100"


def test_the_cluster_imray_starts_uses_a_token_kept_private_in_the_data_dir(
        monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Whatever ~/.ray holds, `ray start` and imray's own connections agree on token auth."""
    from imray.cluster_auth import token_environment

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    settings = load_settings(data_dir=str(tmp_path / "data"))
    env = token_environment(settings)
    token = tmp_path / "data" / "ray-auth-token"
    assert env == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    assert oct(token.stat().st_mode & 0o777) == "0o600" and len(token.read_text()) == 64
    first = token.read_text()
    assert token_environment(settings) == env and token.read_text() == first  # kept across `imray up`s

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # an operator's choice wins
    assert token_environment(load_settings(data_dir=str(tmp_path / "other"))) == {}
    assert not (tmp_path / "other" / "ray-auth-token").exists()


def test_a_stop_by_force_also_stops_serves_haproxy_left_behind(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HAProxy outlives a killed HAProxyManager actor and keeps port 8000; `ray stop` misses it."""
    serve_dir, elsewhere = tmp_path / "haproxy-serve", tmp_path / "other"
    monkeypatch.setenv("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", str(serve_dir / "haproxy.cfg"))
    binary = tmp_path / "haproxy"  # a process that looks like HAProxy: its argv[0] is named so
    binary.symlink_to(sys.executable)
    sleeper = "import time; time.sleep(60)"
    orphan = subprocess.Popen([str(binary), "-c", sleeper, "-db", "-f", f"{serve_dir}/node/haproxy.cfg.forwardfor"])
    other = subprocess.Popen([str(binary), "-c", sleeper, "-f", f"{elsewhere}/haproxy.cfg"])
    for name, files in (("node", ["haproxy.cfg", "haproxy.cfg.forwardfor"]), ("old", ["haproxy.cfg", "admin.sock"]),
                        ("not-serves", ["notes.txt"])):
        (serve_dir / name).mkdir(parents=True)
        for file in files:
            (serve_dir / name / file).write_text("x")
    try:
        time.sleep(0.5)
        localcluster._stop_orphaned_ingress()
        assert orphan.wait(10) == -signal.SIGKILL
        assert other.poll() is None  # an HAProxy that is not Serve's is left alone
        # Serve's directories go with their HAProxy; anything else there stays.
        assert sorted(p.name for p in serve_dir.iterdir()) == ["not-serves"]
    finally:
        for proc in (orphan, other):
            proc.kill()
            proc.wait()


def test_up_finds_the_ports_it_needs_already_taken() -> None:
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        free = spare.getsockname()[1]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        settings = dataclasses.replace(load_settings(socket_nodes=1), http_port=taken, socket_base_port=free)
        found = localcluster.ports_in_use(settings)
        assert taken in found and free not in found


def test_workers_run_at_the_agents_priority_unless_the_operator_says_otherwise(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_worker_niceness", raising=False)
    assert localcluster.ray_environment(load_settings())["RAY_worker_niceness"] == "0"
    monkeypatch.setenv("RAY_worker_niceness", "10")
    assert localcluster.ray_environment(load_settings())["RAY_worker_niceness"] == "10"
