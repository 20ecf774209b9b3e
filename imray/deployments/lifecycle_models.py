"""The message lifecycle's HTTP shapes (issue 18, docs/protocol.md §9): recall, edit, reactions, delete-for-me.

No `from __future__ import annotations` here: FastAPI and pydantic read these annotations at runtime.
"""

from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr

from imray.domain.errors import DomainError
from imray.domain.message_changes import MAX_EMOJI_CHARS, check_emoji
from imray.domain.message_lifecycle import MAX_KEY_CHARS, MAX_SEQ, key_problem

SeqPath = Annotated[int, Path(ge=1, le=MAX_SEQ, description="the seq of the message in its conversation")]


def _key(value: str) -> str:
    problem = key_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _emoji(value: str) -> str:
    try:
        check_emoji(value)  # the shard's own rule, applied before the request goes anywhere
    except DomainError as exc:
        raise ValueError(exc.message) from None
    return value


ChangeKey = Annotated[
    Annotated[StrictStr, Field(min_length=1, max_length=MAX_KEY_CHARS), AfterValidator(_key)] | None,
    Field(description=(
        "your id for this change, in the namespace of your messages' client ids: the same id again "
        "gets the same answer and changes nothing; left out, the server makes one (a repeat is then "
        "a new change)"))]
Emoji = Annotated[StrictStr, Field(min_length=1, max_length=MAX_EMOJI_CHARS, description=(
    "1-16 characters, compared exactly (ZWJ sequences, flags and keycaps are fine); no spaces, "
    "controls or direction marks")), AfterValidator(_emoji)]


class Recall(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: ChangeKey = None


class Edit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: ChangeKey = None
    body: Annotated[StrictStr, Field(description=(
        "the new text: checked like a text message's (non-empty, at most max_text_length characters)"))]


class Reaction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: ChangeKey = None
    emoji: Emoji


class ChangeAnswer(BaseModel):
    """What a change came to: the seq'd event that records it (`seq`, `msg_id`, `ts`), or, for one
    that changed nothing (a reaction already there, an unreact of none), `changed` false and seq 0."""

    id: str
    conv: str
    target: int
    seq: int
    msg_id: str
    ts: int
    changed: bool
