"""Secrets kept out of what gets printed and logged: passwords in URLs, secret-named settings."""

from __future__ import annotations

import re
from dataclasses import fields, is_dataclass
from typing import Any

HIDDEN = "***"
# A setting (or an `extra` key) whose name says it is a secret: its value is never shown.
SECRET_NAME = re.compile(r"(password|passwd|secret|secret_key|token|api_key|private_key|credentials?)$", re.I)
_QUERY_SECRET = re.compile(r"((?:^|[?&;])(?:password|passwd|secret|token|auth)[^=&;]*=)[^&;#]*", re.I)


def redact_url(text: str) -> str:
    """`text` with the password of a scheme://user:password@host URL (and secret query values) hidden."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    head, qmark, query = rest.partition("?")
    userinfo, at, host = head.rpartition("@")  # a careless password may itself hold an @
    if at and ":" in userinfo:
        head = f"{userinfo.split(':', 1)[0]}:{HIDDEN}@{host}"
    elif at and userinfo and not scheme.startswith("http"):  # redis://secret@host: a bare password
        head = f"{HIDDEN}@{host}"
    if qmark:
        query = _QUERY_SECRET.sub(lambda m: m.group(1) + HIDDEN, query)
    return f"{scheme}://{head}{qmark}{query}"


def redact(name: str, value: Any) -> Any:
    """`value` as it may be shown, for a setting called `name`."""
    if SECRET_NAME.search(name) and value not in ("", None):
        return HIDDEN
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, dict):
        return {k: redact(str(k), v) for k, v in value.items()}
    return value


def redacted_repr(obj: Any) -> str:
    """The dataclass repr of `obj`, each field's value redacted."""
    assert is_dataclass(obj)
    shown = ", ".join(f"{f.name}={redact(f.name, getattr(obj, f.name))!r}" for f in fields(obj) if f.repr)
    return f"{type(obj).__name__}({shown})"
