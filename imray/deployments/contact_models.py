"""The contacts routes' HTTP vocabulary: request and response models (OpenAPI shows them).

No `from __future__ import annotations` here: FastAPI and pydantic read these annotations at runtime.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from imray.deployments.http import DbId

# A hard bound before anything is read; `contact_message_chars` (settings) is the real limit (422).
MESSAGE_HARD_CHARS = 4096


class NewContactRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: Annotated[DbId, Field(description="who is asked")]
    message: Annotated[str | None, Field(max_length=MESSAGE_HARD_CHARS, description=(
        "an optional short note (at most contact_message_chars characters)"))] = None


class ContactStateAnswer(BaseModel):
    user_id: int
    state: Literal["pending", "contact"] = Field(description=(
        "pending: the request waits for an answer; contact: the two are contacts (already, or the "
        "other side had asked first and this request accepted theirs)"))


class Contact(BaseModel):
    user_id: int
    username: str
    nickname: str
    avatar_url: str | None
    since: int = Field(description="ms since the epoch: when the two became contacts")


class ContactList(BaseModel):
    contacts: list[Contact]


class ContactRequest(BaseModel):
    from_id: int
    to_id: int
    message: str
    created_at: int
    username: str = Field(description="the other side's username (and nickname, avatar_url)")
    nickname: str
    avatar_url: str | None


class ContactRequests(BaseModel):
    received: list[ContactRequest]
    sent: list[ContactRequest]


class ContactPresence(BaseModel):
    user_id: int
    online: bool
    last_seen: int | None = Field(description=(
        "ms since the epoch: when the contact's last session closed; null while online, if never "
        "seen, or if the contact hides their presence (then online is false too)"))


class ContactPresenceList(BaseModel):
    contacts: list[ContactPresence]


class Privacy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    show_presence: StrictBool = Field(description="false: contacts see you neither online nor last seen")
