"""`imray doctor`: one line per backend: reachable and its version, or the exact problem."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import make_url

from imray.settings import Settings


@dataclass(frozen=True)
class Check:
    backend: str
    ok: bool
    message: str

    def line(self) -> str:
        return f"{self.backend:9} {'ok' if self.ok else 'FAIL':5} {self.message}"


def _guard(backend: str, probe: Callable[[], str]) -> Check:
    try:
        return Check(backend, True, probe())
    except Exception as exc:  # the point is to say what is wrong, whatever it is
        return Check(backend, False, f"{type(exc).__name__}: {exc}".splitlines()[0][:300])


def check_database(settings: Settings) -> Check:
    def probe() -> str:
        from alembic.script import ScriptDirectory

        from imray.storage.db import make_engine
        from imray.storage.migrate import alembic_config, current

        url = settings.db_url
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                if conn.dialect.name == "sqlite":
                    version = f"SQLite {conn.execute(text('select sqlite_version()')).scalar()}"
                else:
                    version = str(conn.execute(text("select version()")).scalar())
        finally:
            engine.dispose()
        head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
        at = current(url)
        schema = (f"schema at {at} (head)" if at == head else
                  f"schema at {at or 'nothing yet'}, head is {head}: run `imray db upgrade`")
        return f"{version} at {make_url(url).render_as_string(hide_password=True)}; {schema}"

    return _guard("database", probe)


def check_redis(settings: Settings) -> Check:
    if not settings.redis_url:
        return Check("redis", True, "not configured: presence in an actor, counters per process (embedded)")

    def probe() -> str:
        import redis

        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=3)
        try:
            client.ping()
            version = client.info("server")["redis_version"]
        finally:
            client.close()
        return f"Redis {version} at {make_url(settings.redis_url).render_as_string(hide_password=True)}"

    return _guard("redis", probe)


def check_objects(settings: Settings) -> Check:
    if not settings.s3_endpoint:
        return Check("objects", True, f"local directory {settings.data_path / 'objects'} (embedded)")

    def probe() -> str:
        from minio import Minio

        client = Minio(settings.s3_endpoint, access_key=settings.s3_access_key, secret_key=settings.s3_secret_key,
                       secure=settings.s3_secure, region=settings.s3_region)
        exists = client.bucket_exists(settings.s3_bucket)  # a signed request: checks the keys too
        state = "exists" if exists else "does not exist yet (imray up creates it)"
        return f"S3 API at {settings.s3_endpoint}, credentials accepted, bucket {settings.s3_bucket} {state}"

    return _guard("objects", probe)


def check_nacos(settings: Settings) -> Check:
    if not settings.nacos_server:
        return Check("nacos", True, "not configured: the supervisor's in-cluster registry, settings from file/env")

    def probe() -> str:
        base = f"http://{settings.nacos_server}/nacos"
        with urllib.request.urlopen(f"{base}/v1/console/server/state", timeout=5) as response:
            state = json.loads(response.read())
        with urllib.request.urlopen(f"{base}/v1/console/health/readiness", timeout=5) as response:
            ready = response.read().decode().strip()
        host, _, port = settings.nacos_server.rpartition(":")
        import socket

        with socket.create_connection((host, int(port) + 1000), timeout=3):
            pass  # nacos-sdk-python 3.x talks gRPC on the HTTP port + 1000
        from imray.adapters.nacos import check_login

        check_login(settings, timeout_s=5)  # NacosLoginRefused, with Nacos's reason, fails the check
        login = f", logged in as {settings.nacos_username}" if settings.nacos_username else ""
        return (f"Nacos {state.get('version', '?')} at {settings.nacos_server}, readiness {ready}, "
                f"gRPC port {int(port) + 1000} open{login}")

    return _guard("nacos", probe)


def run_checks(settings: Settings) -> list[Check]:
    return [check_database(settings), check_redis(settings), check_objects(settings), check_nacos(settings)]
