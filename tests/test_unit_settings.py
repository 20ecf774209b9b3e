"""Settings precedence: defaults < YAML file < IMRAY_* environment < explicit overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imray.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("IMRAY_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "imray.yaml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    settings = load_settings()
    assert settings == Settings()
    assert settings.http_port == 8000 and settings.socket_nodes == 2
    assert settings.shards == 0 and settings.shard_count == 1  # auto: SQLite has a single writer
    assert settings.replace(database_url="mysql+pymysql://x@h/d").shard_count == 4
    assert settings.ray_port != 6379


def test_yaml_over_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "http_port: 9000\nshards: 4\nnamespace: test\n"))
    assert (settings.http_port, settings.shards, settings.namespace) == (9000, 4, "test")
    assert settings.socket_nodes == Settings().socket_nodes  # untouched keys keep their defaults


def test_env_over_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "http_port: 9000\nshards: 4\n")
    monkeypatch.setenv("IMRAY_HTTP_PORT", "9100")
    settings = load_settings(path)
    assert settings.http_port == 9100
    assert settings.shards == 4


def test_overrides_over_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "http_port: 9000\nshards: 4\n")
    monkeypatch.setenv("IMRAY_HTTP_PORT", "9100")
    monkeypatch.setenv("IMRAY_SHARDS", "6")
    settings = load_settings(path, http_port=9200, shards=None)  # None: not given
    assert settings.http_port == 9200
    assert settings.shards == 6


def test_config_file_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMRAY_CONFIG", str(write(tmp_path, "socket_nodes: 5\n")))
    assert load_settings().socket_nodes == 5


def test_explicit_path_beats_imray_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "other.yaml").write_text("socket_nodes: 7\n")
    monkeypatch.setenv("IMRAY_CONFIG", str(tmp_path / "other.yaml"))
    assert load_settings(write(tmp_path, "socket_nodes: 5\n")).socket_nodes == 5


def test_unknown_yaml_keys_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="http_prot"):
        load_settings(write(tmp_path, "http_prot: 9000\nshards: 4\n"))


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_non_mapping_yaml_raises(tmp_path: Path, text: str) -> None:
    with pytest.raises(ValueError, match="mapping"):
        load_settings(write(tmp_path, text))


def test_empty_yaml_is_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "")) == Settings()


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "nope.yaml")


def test_env_coercion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMRAY_SOCKET_NODES", "3")
    monkeypatch.setenv("IMRAY_MAX_TEXT_LENGTH", " 123 ")
    monkeypatch.setenv("IMRAY_SOCKET_AUTH_TIMEOUT_S", "2.5")
    monkeypatch.setenv("IMRAY_DATABASE_URL", "mysql+pymysql://u:p@db/imray")
    monkeypatch.setenv("IMRAY_PUBLIC_URL", "https://chat.example/")
    settings = load_settings()
    assert settings.socket_nodes == 3 and type(settings.socket_nodes) is int
    assert settings.max_text_length == 123
    assert settings.socket_auth_timeout_s == 2.5 and type(settings.socket_auth_timeout_s) is float
    assert settings.database_url == "mysql+pymysql://u:p@db/imray"
    assert settings.db_url == "mysql+pymysql://u:p@db/imray"
    assert settings.base_url == "https://chat.example"


def test_bad_int_in_env_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMRAY_HTTP_PORT", "eighty")
    with pytest.raises(ValueError):
        load_settings()


def test_extra_is_not_read_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMRAY_EXTRA", "x")
    assert load_settings().extra == {}


def test_derived_properties(tmp_path: Path) -> None:
    settings = load_settings(data_dir=str(tmp_path / "d"), http_host="0.0.0.0", http_port=8080)
    assert settings.base_url == "http://0.0.0.0:8080"
    assert settings.data_path == tmp_path / "d"
    assert settings.db_url == f"sqlite:///{tmp_path / 'd' / 'imray.db'}"
    assert Settings(data_dir="~/x").data_path == Path(os.path.expanduser("~/x"))


def test_replace_keeps_other_fields() -> None:
    base = Settings(shards=5)
    changed = base.replace(http_port=1234)
    assert (changed.shards, changed.http_port) == (5, 1234)
    assert base.http_port == 8000  # frozen original untouched


def test_automatic_shard_count_follows_the_cluster_cpus(tmp_path) -> None:
    sqlite = load_settings(data_dir=str(tmp_path))
    server = sqlite.replace(database_url="mysql+pymysql://u:p@127.0.0.1:3306/imray")
    assert sqlite.with_shards_for(64).shards == 1  # a single writer anyway
    assert [server.with_shards_for(cpus).shards for cpus in (1, 2, 4, 8, 16.0, 64)] == [1, 1, 1, 2, 4, 8]
    assert server.replace(shards=3).with_shards_for(64).shards == 3  # an explicit count stays


def test_the_socket_url_is_the_nodes_own_address_without_a_public_template() -> None:
    assert Settings().socket_url("sn-1", "10.77.0.3", 9101) == "ws://10.77.0.3:9101/ws"


@pytest.mark.parametrize(("template", "url"), [
    ("wss://chat.example.com/ws/{node}", "wss://chat.example.com/ws/sn-2"),
    ("wss://{node}.chat.example.com/ws", "wss://sn-2.chat.example.com/ws"),
    ("ws://{host}:{port}/ws", "ws://10.77.0.3:9102/ws"),
    ("wss://edge.example.com:{port}/ws/{node}?via={host}", "wss://edge.example.com:9102/ws/sn-2?via=10.77.0.3"),
])
def test_the_public_socket_url_template_fills_node_host_and_port(template: str, url: str) -> None:
    settings = load_settings(socket_public_url=template)
    assert settings.socket_url("sn-2", "10.77.0.3", 9102) == url


def test_the_public_socket_url_comes_from_the_environment_and_yaml(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "socket_public_url: wss://a.example/ws/{node}\n")
    assert load_settings(path).socket_public_url == "wss://a.example/ws/{node}"
    monkeypatch.setenv("IMRAY_SOCKET_PUBLIC_URL", "wss://b.example/ws/{node}")
    assert load_settings(path).socket_url("sn-1", "h", 1) == "wss://b.example/ws/sn-1"


@pytest.mark.parametrize(("template", "complaint"), [
    ("wss://chat.example.com/ws/{nodes}", "unknown placeholders \\['nodes'\\]"),
    ("wss://chat.example.com/ws/{}", "unknown placeholders"),
    ("wss://chat.example.com/ws/{node.id}", "unknown placeholders"),
    ("wss://chat.example.com/ws/{node", "socket_public_url"),
    ("wss://chat.example.com/ws/{node:d}", "socket_public_url"),
    ("wss://chat.example.com/ws/{node!z}", "socket_public_url"),
    ("https://chat.example.com/ws/{node}", "ws:// or wss://"),
    ("wss://chat.example.com/ws", "the same URL"),  # two nodes, one URL: a proxy cannot route
])
def test_a_bad_public_socket_url_is_a_settings_error_at_load(
        template: str, complaint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=complaint):
        load_settings(socket_public_url=template)
    with pytest.raises(ValueError, match=complaint):
        load_settings(write(tmp_path, f"socket_public_url: '{template}'\n"))
    monkeypatch.setenv("IMRAY_SOCKET_PUBLIC_URL", template)
    with pytest.raises(ValueError, match=complaint):
        load_settings()


def test_one_socket_node_may_have_a_fixed_public_url() -> None:
    settings = load_settings(socket_nodes=1, socket_public_url="wss://chat.example.com/ws")
    assert settings.socket_url("sn-1", "10.0.0.1", 9101) == "wss://chat.example.com/ws"
    with pytest.raises(ValueError, match="the same URL"):
        settings.replace(socket_nodes=2)  # every way of building settings checks it


@pytest.mark.parametrize("name", ["IMRAY_SOCKET_PING_INTERVAL_S", "IMRAY_SOCKET_PING_TIMEOUT_S"])
def test_a_keepalive_of_zero_seconds_is_a_settings_error(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, "0")
    with pytest.raises(ValueError, match="must be above 0"):
        load_settings()
