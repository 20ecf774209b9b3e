"""Content rules of a message that need no state: what a send or an edit may carry."""

from __future__ import annotations

from imray.domain.errors import BadRequest, TooLarge


def check_send(kind: str, body: str, file_id: str | None, max_text: int) -> None:
    """Content rules that need no state; the socket node applies them before anything is queued."""
    if len(body) > max_text:
        raise TooLarge(f"body is longer than {max_text} characters")
    if kind == "text":
        if not body.strip():
            raise BadRequest("a text message needs a non-empty body")
        if file_id is not None:
            raise BadRequest("file_id belongs to image or file messages")
    elif not file_id:
        raise BadRequest(f"a {kind} message needs a file_id from an upload")
