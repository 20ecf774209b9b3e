"""What may be uploaded: the type comes from the bytes, never from the client's say-so."""

from __future__ import annotations

from typing import TypedDict
from urllib.parse import quote

import filetype

from imray.domain.errors import Invalid, TooLarge, Unsupported

AVATAR_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
FILE_TYPES = AVATAR_TYPES | frozenset({
    "application/pdf", "application/zip", "application/gzip", "application/x-7z-compressed",
    "audio/mpeg", "audio/ogg", "audio/x-wav", "audio/mp4", "video/mp4", "video/webm", "video/quicktime",
    "text/plain",
})


# Every download, whatever its type: never sniffed into HTML, never a script or a page on the origin
# that serves it (an uploaded text file opened in a browser stays inert).
SANDBOXED = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox; default-src 'none'"}


class OverQuota(TooLarge):
    """The upload would take its owner's stored bytes over `user_storage_quota_bytes`: a 413 as for a
    file too large (a 5xx would invite retries, and says the server failed, which it did not)."""

    code = "over_quota"


class Upload(TypedDict):
    """An upload as recorded (the files table)."""

    file_id: str
    owner_id: int
    purpose: str  # "file" (a chat upload) or "avatar"
    object_key: str
    content_type: str
    size: int
    filename: str | None
    created_at: int


def sniff(data: bytes) -> str:
    """The content type of `data`; UTF-8 text without NUL bytes counts as text/plain."""
    found: str | None = filetype.guess_mime(data[:8192])
    if found:
        return found
    head: str | None
    try:
        head = data[:65536].decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the window's end is still text
        head = data[:exc.start].decode("utf-8") if exc.start > 65536 - 4 else None
    if head is not None and "\x00" not in head:
        return "text/plain"
    return "application/octet-stream"


def check_upload(data: bytes, purpose: str, limit: int) -> str:
    """Validate an upload for `purpose` ("file" or "avatar"); returns its sniffed content type."""
    if not data:
        raise Invalid("the upload is empty")
    if len(data) > limit:
        raise TooLarge(f"uploads are limited to {limit} bytes")
    content_type = sniff(data)
    allowed = AVATAR_TYPES if purpose == "avatar" else FILE_TYPES
    if content_type not in allowed:
        raise Unsupported(f"{content_type} is not accepted here; allowed: {', '.join(sorted(allowed))}")
    return content_type


def check_quota(stored: int, size: int, quota: int) -> None:
    """Refuse an upload of `size` bytes by a user who already stores `stored`; a quota of 0 is none."""
    if quota and stored + size > quota:
        raise OverQuota(f"storage quota exceeded: your uploads may take {quota} bytes in all, {stored} are "
                        f"taken and this upload has {size}")


def content_disposition(content_type: str, filename: str | None) -> str:
    """Images show inline; everything else downloads, under its uploaded name made safe for a header."""
    kind = "inline" if content_type in AVATAR_TYPES else "attachment"
    name = "".join(c for c in (filename or "").replace("\\", "/").rsplit("/", 1)[-1] if c.isprintable())
    if not name:
        return kind
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in name)
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"  # RFC 6266


def download_headers(content_type: str, filename: str | None) -> dict[str, str]:
    """The headers of a file's bytes wherever they are served: sandboxed, and named."""
    return {**SANDBOXED, "Content-Disposition": content_disposition(content_type, filename)}
