"""The conversation list's HTTP shapes: its items, its paging, and a user's own settings of a conversation."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, ConfigDict, StrictBool

ListLimit = Annotated[int, Query(ge=1, le=200, description="items per page (pinned ones count)")]
ListAfter = Annotated[str | None, Query(max_length=80, description="the `cursor` of the last item of the page before")]


class ConversationEntry(BaseModel):
    conv: str
    last_seq: int
    read_seq: int
    unread: int
    mentioned: bool  # an unread, not recalled message mentions you (issue 18, docs/protocol.md §9)
    last_message: dict[str, Any] | None
    pinned: bool
    muted: bool
    updated_at: int
    cursor: str


class ConversationSettingsChange(BaseModel):
    """What to change; a field left out keeps its value."""

    model_config = ConfigDict(extra="forbid")
    pinned: StrictBool | None = None
    muted: StrictBool | None = None


class ConversationSettingsAnswer(BaseModel):
    conv: str
    pinned: bool
    muted: bool
