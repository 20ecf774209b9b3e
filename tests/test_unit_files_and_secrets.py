"""Download headers, the storage quota rule, and secrets kept out of every repr (issue 16, point 7)."""

from __future__ import annotations

import pytest

from imray.domain.errors import TooLarge
from imray.domain.files import OverQuota, check_quota, content_disposition, download_headers
from imray.domain.nodes import ShardEndpoint
from imray.domain.tokens import SigningKey
from imray.redact import redact_url
from imray.settings import Settings, checked

# -- downloads ---------------------------------------------------------------------------------


def test_every_download_is_sandboxed_and_never_sniffed() -> None:
    headers = download_headers("text/plain", "notes.txt")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == "sandbox; default-src 'none'"
    assert headers["Content-Disposition"].startswith("attachment;")


@pytest.mark.parametrize("content_type", ["image/png", "image/jpeg", "image/gif", "image/webp"])
def test_images_may_stay_inline(content_type: str) -> None:
    assert content_disposition(content_type, "cat.png").startswith("inline;")


@pytest.mark.parametrize("content_type", ["text/plain", "application/pdf", "video/mp4", "application/zip"])
def test_anything_else_is_an_attachment(content_type: str) -> None:
    assert content_disposition(content_type, None) == "attachment"


def test_a_hostile_file_name_cannot_break_out_of_its_header() -> None:
    value = content_disposition("text/plain", 'C:\\x\\../evil"\r\nSet-Cookie: a=b;.txt')
    assert "\r" not in value and "\n" not in value
    assert value.startswith('attachment; filename="evil_Set-Cookie: a=b;.txt"; filename*=UTF-8\'\'')
    assert value.encode("latin-1")  # a valid header value


def test_a_non_ascii_file_name_travels_encoded_with_an_ascii_fallback() -> None:
    value = content_disposition("application/pdf", "résumé.pdf")
    assert value == "attachment; filename=\"r_sum_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"


# -- quota -------------------------------------------------------------------------------------


def test_an_upload_that_fits_the_quota_passes_exactly_at_the_limit() -> None:
    assert check_quota(stored=900, size=100, quota=1000) is None


def test_an_upload_over_the_quota_is_a_413_that_says_the_numbers() -> None:
    with pytest.raises(OverQuota) as exc:
        check_quota(stored=900, size=101, quota=1000)
    assert isinstance(exc.value, TooLarge) and exc.value.status == 413 and exc.value.code == "over_quota"
    assert exc.value.message == ("storage quota exceeded: your uploads may take 1000 bytes in all, 900 are "
                                 "taken and this upload has 101")


def test_a_quota_of_zero_is_no_quota() -> None:
    assert check_quota(stored=10**15, size=10**9, quota=0) is None


# -- secrets -----------------------------------------------------------------------------------

SECRETS = ["db-pass-1", "redis-pass-2", "s3-secret-3", "nacos-pass-4", "extra-token-5"]


def test_settings_repr_shows_no_password_secret_key_or_token() -> None:
    settings = Settings(database_url=f"mysql+pymysql://imray:{SECRETS[0]}@db:3306/imray?charset=utf8mb4",
                        redis_url=f"redis://:{SECRETS[1]}@cache:6379/0", s3_secret_key=SECRETS[2],
                        nacos_password=SECRETS[3], extra={"api_token": SECRETS[4]})
    for text in (repr(settings), str(settings), f"{settings}", repr([settings])):
        assert not [s for s in SECRETS if s in text], text
    shown = repr(settings)
    assert "database_url='mysql+pymysql://imray:***@db:3306/imray?charset=utf8mb4'" in shown
    assert "redis_url='redis://:***@cache:6379/0'" in shown
    assert "s3_secret_key='***'" in shown and "nacos_password='***'" in shown
    assert "s3_bucket='imray'" in shown  # what is not secret stays readable


def test_settings_repr_shows_empty_secrets_as_empty() -> None:
    assert "nacos_password=''" in repr(Settings())


@pytest.mark.parametrize(("url", "shown"), [
    ("mysql+pymysql://u:p%40ss@h:3306/d", "mysql+pymysql://u:***@h:3306/d"),
    ("redis://:p@ss@h:6379/0", "redis://:***@h:6379/0"),  # an unencoded @ in the password
    ("redis://bare-secret@h:6379", "redis://***@h:6379"),
    ("rediss://h:6380/0?password=pw&db=1", "rediss://h:6380/0?password=***&db=1"),
    ("http://h:8848/nacos", "http://h:8848/nacos"),
    ("sqlite:////tmp/imray.db", "sqlite:////tmp/imray.db"),
])
def test_urls_lose_their_passwords_only(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_mistyped_secret_setting_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError) as exc:
        checked({"nacos_password": 918273645}, "imray.yaml")
    assert "918273645" not in str(exc.value) and "nacos_password must be a str" in str(exc.value)


def test_the_signing_key_and_the_shard_secret_stay_out_of_their_reprs() -> None:
    key = SigningKey.generate()
    assert "PRIVATE" not in repr(key) and key.kid in repr(key)
    assert "s3cr3t" not in repr(ShardEndpoint("10.0.0.1", 9300, "s3cr3t"))
