"""The integration stack: a real Ray cluster (a head and 2 worker nodes, each worker offering the
`socket_node` resource) in this process tree, with imray deployed on it as `imray up` does."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from imray.domain.nodes import NodeStatus
from imray.settings import Settings, load_settings
from imray.storage.db import Database

# Which adapters the suite runs on: "embedded" (SQLite, in-cluster presence...) or "real" (the
# middleware named by IMRAY_* variables; `make test` starts it and runs the suite on both).
STACK = os.environ.get("IMRAY_TEST_STACK", "embedded")
# Tests of the production adapters themselves (Nacos, Redis restarts...) exist only on the real stack.
collect_ignore_glob = [] if STACK == "real" else ["test_real_*.py"]
NOTIFY_PORT = 18231  # the test deployment's webhook receiver (below the ephemeral ports: never taken by chance)


def fresh_database(url: str) -> None:
    """An empty database for this run; the real stack must be there (never a skip)."""
    import sqlalchemy

    if not url.startswith("mysql"):
        pytest.fail(f"IMRAY_TEST_STACK=real needs IMRAY_DATABASE_URL=mysql+mysqldb://... (or +pymysql), not {url!r}")
    parsed = sqlalchemy.engine.make_url(url)
    name = parsed.database
    engine = sqlalchemy.create_engine(parsed.set(database=""))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
            conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    except sqlalchemy.exc.OperationalError as exc:
        pytest.fail(f"the real stack's database is unreachable: {exc}")
    finally:
        engine.dispose()


@dataclass
class Stack:
    settings: Settings
    nodes: list[NodeStatus]
    worker_node_ids: list[str]
    data_dir: str
    key: object = None

    @property
    def base_url(self) -> str:
        return self.settings.base_url


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from imray.localcluster import loopback_only

    if not loopback_only():
        pytest.fail("run the integration tests inside a loopback-only namespace: scripts/netns-run pytest")
    tmp = tmp_path_factory.mktemp("imray")
    import yaml
    from ray import serve

    from imray import app, runtime
    from imray.localcluster import local_cluster, ray_environment

    # The suite's settings go through a config file and the Serve application builder, as `serve run
    # imray.app:build config=...` and KubeRay's RayService deploy imray (issue 20): the whole suite
    # passes through the builder's argument parsing and settings loading.
    config = tmp / "imray.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": str(tmp / "data"), "socket_nodes": 2, "shards": 2, "socket_auth_timeout_s": 2.0,
        "max_text_length": 4000, "max_upload_bytes": 256 * 1024, "max_avatar_bytes": 64 * 1024,
        "user_storage_quota_bytes": 1024 * 1024,
        "socket_send_queue": 100,
        "authorization_code_ttl_s": 10,  # tests/test_pkce.py waits for one to expire
        # tests/test_notify.py listens here for the offline-notification webhook; other tests' calls
        # find nothing listening (refused at once) and give up within ~2 s.
        "notify_webhook_url": f"http://127.0.0.1:{NOTIFY_PORT}/hook",
        "notify_webhook_secret": "imray-test-webhook-secret", "notify_preview_chars": 40,
        "notify_attempts": 4, "notify_retry_base_s": 0.2, "notify_retry_max_s": 1.0,
        # The real stack fans out through presence (Redis); the embedded one, with two nodes, sends to
        # both (the default up to four): both paths are tested.
        "fanout_broadcast_nodes": 0 if STACK == "real" else 4}))
    settings = load_settings(config)
    with local_cluster(workers=2, env=ray_environment(settings)) as (_, workers):
        if STACK == "real":
            fresh_database(settings.db_url)
        key = runtime.prepare(settings)
        runtime.start_http(settings)
        serve.run(app.build({"config": str(config)}), name=runtime.APP_NAME, route_prefix="/")
        try:
            yield Stack(settings, runtime.status(settings), workers, settings.data_dir, key)
        finally:
            runtime.undeploy(settings)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `runs_last` go after every other test; the order is otherwise left as collected."""
    items.sort(key=lambda item: item.get_closest_marker("runs_last") is not None)  # a stable sort


@pytest.fixture
def sqlite_db(tmp_path) -> Iterator[Database]:
    """A fresh SQLite database with imray's schema, for tests of storage and domain without Ray."""
    database = Database(f"sqlite:///{tmp_path}/t.db")
    database.create_schema()
    try:
        yield database
    finally:
        database.close()
