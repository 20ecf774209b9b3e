"""imray's Python SDK: `ImrayClient` (ordered, gap-free streams over one socket), `HttpApi`, `RawSocket`."""

from imray.client.errors import ImrayError, ImrayHttpError
from imray.client.events import (
    Ack,
    Contact,
    Deleted,
    ErrorEvent,
    Event,
    Frame,
    Message,
    Presence,
    Receipt,
    StateChange,
    Typing,
    parse_event,
)
from imray.client.http import PUBLIC_CLIENT, Assignment, HttpApi, Tokens, bearer
from imray.client.raw import RawSocket
from imray.client.session import ImrayClient
from imray.client.streams import Gap, Streams

__all__ = [
    "PUBLIC_CLIENT", "Ack", "Assignment", "Contact", "Deleted", "ErrorEvent", "Event", "Frame", "Gap", "HttpApi",
    "ImrayClient", "ImrayError", "ImrayHttpError", "Message", "Presence", "RawSocket", "Receipt", "StateChange",
    "Streams", "Tokens", "Typing", "bearer", "parse_event",
]
