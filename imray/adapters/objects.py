"""Object storage: a local directory (embedded default) or any S3 API through the minio SDK."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from pathlib import Path
from typing import ParamSpec, Protocol, TypeVar

from imray.adapters import metrics
from imray.settings import Settings

P = ParamSpec("P")
T = TypeVar("T")


def _counted(call: Callable[P, T]) -> Callable[P, T]:
    """A failed call to the S3 server counts in the backend errors metric (issue 20), then raises."""
    @wraps(call)
    def counted(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return call(*args, **kwargs)
        except Exception:
            metrics.backend_error("s3")
            raise
    return counted


class ObjectStore(Protocol):
    """Objects by key. `disposition` is the Content-Disposition the object is served with: kept with
    the object by `put` and asked for again in a presigned URL (S3 servers honour one or the other)."""

    def ensure_bucket(self) -> None: ...
    def put(self, key: str, data: bytes, content_type: str, disposition: str) -> None: ...
    def get(self, key: str) -> bytes: ...
    def delete(self, key: str) -> None: ...
    def presigned_url(self, key: str, ttl_s: int, content_type: str, disposition: str) -> str | None: ...
    def describe(self) -> str: ...


class LocalObjects:
    """Files under data_dir/objects; downloads are served by the gateway itself (no URL to hand out)."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def ensure_bucket(self) -> None:
        self._root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self._root / key).resolve()
        if self._root.resolve() not in path.parents:
            raise ValueError("object key escapes the store")
        return path

    def put(self, key: str, data: bytes, content_type: str, disposition: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # never a half-written object under the real name

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def presigned_url(self, key: str, ttl_s: int, content_type: str, disposition: str) -> str | None:
        return None

    def describe(self) -> str:
        return f"local directory {self._root}"


class S3Objects:
    def __init__(self, settings: Settings) -> None:
        from minio import Minio

        # An explicit region spares a GetBucketLocation call, which some S3 servers lack.
        self._client = Minio(settings.s3_endpoint, access_key=settings.s3_access_key,
                             secret_key=settings.s3_secret_key, secure=settings.s3_secure,
                             region=settings.s3_region)
        self._bucket = settings.s3_bucket
        self._endpoint = settings.s3_endpoint

    @_counted
    def ensure_bucket(self) -> None:
        if not self._client.bucket_exists(self._bucket):
            self._client.make_bucket(self._bucket)

    @_counted
    def put(self, key: str, data: bytes, content_type: str, disposition: str) -> None:
        self._client.put_object(self._bucket, key, io.BytesIO(data), len(data), content_type=content_type,
                                metadata={"Content-Disposition": disposition})

    @_counted
    def get(self, key: str) -> bytes:
        response = self._client.get_object(self._bucket, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    @_counted
    def delete(self, key: str) -> None:
        self._client.remove_object(self._bucket, key)

    def presigned_url(self, key: str, ttl_s: int, content_type: str, disposition: str) -> str | None:
        # Objects stored before dispositions were kept get theirs from the URL (AWS, MinIO; s3s-fs
        # ignores these and serves what `put` stored).
        overrides: dict[str, str | list[str] | tuple[str]] = {
            "response-content-type": content_type, "response-content-disposition": disposition}
        return self._client.presigned_get_object(self._bucket, key, expires=timedelta(seconds=ttl_s),
                                                 response_headers=overrides)

    def describe(self) -> str:
        return f"S3 bucket {self._bucket} at {self._endpoint}"

