"""What may be uploaded: the type comes from the bytes, never from the client's say-so."""

from __future__ import annotations

from typing import TypedDict

import filetype

from imray.domain.errors import Invalid, TooLarge, Unsupported

AVATAR_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
FILE_TYPES = AVATAR_TYPES | frozenset({
    "application/pdf", "application/zip", "application/gzip", "application/x-7z-compressed",
    "audio/mpeg", "audio/ogg", "audio/x-wav", "audio/mp4", "video/mp4", "video/webm", "video/quicktime",
    "text/plain",
})


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
