#!/usr/bin/env python3
"""Smoke test of the local S3 server (middleware/s3/start.sh) with the `minio` Python SDK.

    python middleware/s3/smoke.py        # needs `pip install minio`; server on 127.0.0.1:9000

Env: IMRAY_S3_ENDPOINT (127.0.0.1:9000), IMRAY_S3_ACCESS_KEY, IMRAY_S3_SECRET_KEY.
Exits non-zero if a required check fails; "extra" checks only report what the server supports.
"""
import io
import os
import sys
import time
import urllib.error
import urllib.request
from datetime import timedelta

import minio
from minio import Minio
from minio.commonconfig import CopySource
from minio.error import S3Error

ENDPOINT = os.environ.get("IMRAY_S3_ENDPOINT", "127.0.0.1:9000")
ACCESS_KEY = os.environ.get("IMRAY_S3_ACCESS_KEY", "imray")
SECRET_KEY = os.environ.get("IMRAY_S3_SECRET_KEY", "imray-secret-key-for-tests")
REGION = "us-east-1"  # explicit region: the SDK then skips GetBucketLocation

failures = []


def step(name, required=True):
    """Decorator-ish runner: times fn, prints ok/FAIL, records required failures."""
    def run(fn):
        t0 = time.perf_counter()
        try:
            detail = fn()
            ok = True
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"
            ok = False
        ms = (time.perf_counter() - t0) * 1000
        tag = "ok  " if ok else ("FAIL" if required else "n/a ")
        print(f"[{tag}] {ms:8.1f} ms  {name}" + (f"  -- {detail}" if detail else ""))
        if not ok and required:
            failures.append(name)
        return ok
    return run


def http_get(url):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.headers, resp.read()


def expect_refused(url):
    try:
        status, _, body = http_get(url)
    except urllib.error.HTTPError as err:
        code = err.read().decode(errors="replace")
        code = code.split("<Code>")[1].split("</Code>")[0] if "<Code>" in code else code[:80]
        return f"refused: HTTP {err.code} {code}"
    raise AssertionError(f"accepted: HTTP {status}, {len(body)} bytes")


def main():
    print(f"minio SDK {minio.__version__}, endpoint http://{ENDPOINT}, access key {ACCESS_KEY!r}")
    client = Minio(ENDPOINT, ACCESS_KEY, SECRET_KEY, secure=False, region=REGION)
    bucket = f"imray-smoke-{int(time.time() * 1000)}"
    key = "media/2024/hello world+ü.txt"  # spaces, '+', non-ASCII: exercise SigV4 URI encoding
    data = os.urandom(1024) + "héllo imray".encode()
    ctype = "application/x-imray-test"
    T0 = time.perf_counter()

    def make_bucket():
        assert client.bucket_exists(bucket) is False, "bucket exists before make_bucket"
        client.make_bucket(bucket)
        assert client.bucket_exists(bucket) is True, "bucket_exists is False after make_bucket"
        return bucket
    if not step("make_bucket + bucket_exists")(make_bucket):
        sys.exit(f"cannot continue: {failures}")

    step("put_object with content_type")(lambda: client.put_object(
        bucket, key, io.BytesIO(data), len(data), content_type=ctype,
        metadata={"x-amz-meta-sender": "alice"}).etag)

    def stat():
        st = client.stat_object(bucket, key)
        assert st.size == len(data), f"size {st.size} != {len(data)}"
        assert st.content_type == ctype, f"content_type {st.content_type!r} != {ctype!r}"
        return f"size={st.size} content_type={st.content_type} etag={st.etag}"
    step("stat_object size + content_type")(stat)

    def get():
        resp = client.get_object(bucket, key)
        try:
            body = resp.read()
        finally:
            resp.close()
            resp.release_conn()
        assert body == data, "bytes differ"
        return f"{len(body)} bytes equal"
    step("get_object bytes equal")(get)

    def presigned_get():
        url = client.presigned_get_object(bucket, key, expires=timedelta(minutes=5))
        status, headers, body = http_get(url)
        assert status == 200 and body == data, f"HTTP {status}, bytes equal={body == data}"
        return f"HTTP {status}, {len(body)} bytes equal, Content-Type {headers.get('Content-Type')}"
    step("presigned_get_object via urllib")(presigned_get)

    def tampered():
        url = client.presigned_get_object(bucket, key, expires=timedelta(minutes=5))
        sig = url.rsplit("X-Amz-Signature=", 1)[1]
        bad = url[: -len(sig)] + ("0" if sig[0] != "0" else "1") + sig[1:]
        return expect_refused(bad)
    step("tampered presigned URL refused")(tampered)

    def expired():
        url = client.presigned_get_object(bucket, key, expires=timedelta(seconds=1))
        time.sleep(2.1)
        return expect_refused(url)
    step("expired presigned URL refused (1 s expiry, 2.1 s wait)")(expired)

    def wrong_secret():
        bad = Minio(ENDPOINT, ACCESS_KEY, SECRET_KEY + "-wrong", secure=False, region=REGION)
        try:
            bad.stat_object(bucket, key)
        except S3Error as err:
            return f"refused: {err.code}: {err.message}"
        raise AssertionError("wrong secret key accepted")
    step("client with wrong secret key refused")(wrong_secret)

    def wrong_access():
        bad = Minio(ENDPOINT, "nobody", SECRET_KEY, secure=False, region=REGION)
        try:
            bad.list_buckets()
        except S3Error as err:
            return f"refused: {err.code}: {err.message}"
        raise AssertionError("unknown access key accepted")
    step("client with unknown access key refused")(wrong_access)

    # ---- extras: report what else the server supports (not required) ----
    def user_metadata():
        md = client.stat_object(bucket, key).metadata
        v = md.get("x-amz-meta-sender")
        assert v == "alice", f"x-amz-meta-sender = {v!r}"
        return "x-amz-meta-sender=alice"
    step("extra: user metadata round trip", required=False)(user_metadata)

    def presigned_override():
        url = client.presigned_get_object(bucket, key, expires=timedelta(minutes=5),
                                          response_headers={"response-content-type": "image/png"})
        _, headers, _ = http_get(url)
        assert headers.get("Content-Type") == "image/png", f"Content-Type {headers.get('Content-Type')!r}"
        return "Content-Type image/png"
    step("extra: presigned GET with response-content-type", required=False)(presigned_override)

    def presigned_put():
        k2 = "presigned-put.bin"
        url = client.presigned_put_object(bucket, k2, expires=timedelta(minutes=5))
        req = urllib.request.Request(url, data=b"via presigned put", method="PUT")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200, f"HTTP {resp.status}"
        r = client.get_object(bucket, k2)
        body = r.read()
        r.close()
        r.release_conn()
        assert body == b"via presigned put"
        return "PUT 200, read back"
    step("extra: presigned_put_object via urllib", required=False)(presigned_put)

    def multipart():
        big = os.urandom(11 * 1024 * 1024)
        client.put_object(bucket, "big.bin", io.BytesIO(big), len(big), part_size=5 * 1024 * 1024,
                          content_type="video/mp4")
        st = client.stat_object(bucket, "big.bin")
        r = client.get_object(bucket, "big.bin")
        body = r.read()
        r.close()
        r.release_conn()
        assert body == big and st.size == len(big), "multipart object differs"
        return f"11 MiB in 3 parts, content_type={st.content_type}"
    step("extra: multipart upload (11 MiB)", required=False)(multipart)

    def range_get():
        r = client.get_object(bucket, key, offset=10, length=20)
        body = r.read()
        r.close()
        r.release_conn()
        assert body == data[10:30], "range bytes differ"
        return "20 bytes"
    step("extra: ranged get_object", required=False)(range_get)

    def copy():
        client.copy_object(bucket, "copy.txt", CopySource(bucket, key))
        return f"content_type={client.stat_object(bucket, 'copy.txt').content_type}"
    step("extra: copy_object", required=False)(copy)

    keys = sorted([key, "presigned-put.bin", "big.bin", "copy.txt"])

    def list_flat():
        # s3s-fs echoes EncodingType=url but returns the keys unencoded; minio-py then
        # url-decodes them ('+' -> ' ', '%xx' decoded). use_url_encoding_type=False avoids that.
        top = sorted(o.object_name for o in client.list_objects(bucket, use_url_encoding_type=False))
        sub = sorted(o.object_name for o in client.list_objects(
            bucket, prefix="media/2024/", use_url_encoding_type=False))
        assert top == ["big.bin", "copy.txt", "media/", "presigned-put.bin"], top
        assert sub == [key], sub
        return f"{top} + {sub}"
    step("extra: list_objects delimiter '/' + prefix, use_url_encoding_type=False",
         required=False)(list_flat)

    def list_encoded():
        sub = [o.object_name for o in client.list_objects(bucket, prefix="media/2024/")]
        assert sub == [key], f"got {sub}"
        return "keys intact"
    step("extra: list_objects default encoding-type=url, key with '+'", required=False)(list_encoded)

    def list_recursive():
        # minio-py sends `delimiter=` (empty) for recursive=True; s3s-fs 0.14.1 treats "" as a
        # delimiter and returns 1-character common prefixes instead of the keys.
        got = sorted(o.object_name for o in client.list_objects(bucket, recursive=True))
        assert got == keys, f"got {got}"
        return f"{len(got)} keys"
    step("extra: list_objects recursive=True", required=False)(list_recursive)

    step("extra: list_buckets", required=False)(
        lambda: f"{len(client.list_buckets())} bucket(s)")

    def non_empty_bucket():
        other = bucket + "-ne"
        client.make_bucket(other)
        client.put_object(other, "x", io.BytesIO(b"x"), 1)
        try:
            client.remove_bucket(other)
        except S3Error as err:
            client.remove_object(other, "x")
            client.remove_bucket(other)
            return f"refused: {err.code}"
        raise AssertionError("remove_bucket deleted a non-empty bucket (no BucketNotEmpty)")
    step("extra: remove_bucket refuses a non-empty bucket", required=False)(non_empty_bucket)

    def cleanup():
        names = keys  # not from recursive listing: see above
        for n in names:
            client.remove_object(bucket, n)
        try:
            client.stat_object(bucket, key)
            raise AssertionError("object still there after remove_object")
        except S3Error as err:
            assert err.code == "NoSuchKey", err.code
        client.remove_bucket(bucket)
        assert client.bucket_exists(bucket) is False
        return f"removed {len(names)} objects and the bucket"
    step("remove_object + remove_bucket")(cleanup)

    print(f"total {time.perf_counter() - T0:.2f} s; "
          + ("ALL REQUIRED CHECKS PASSED" if not failures else f"FAILED: {failures}"))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
