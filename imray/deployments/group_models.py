"""The group routes' HTTP vocabulary (issue 18 §10): request and response models (OpenAPI shows them).

No `from __future__ import annotations` here: FastAPI and pydantic read these annotations at runtime.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from imray.deployments.http import DbId
from imray.domain.groups import MAX_DESCRIPTION, MAX_NAME


class GroupAnswer(BaseModel):
    """A group as its members see it: PROTOCOL §3's fields, then issue 18's."""

    id: int
    conv: str
    name: str
    owner_id: int
    members: list[int] = Field(description="longest-standing first")
    description: str
    add_policy: Literal["everyone", "admins"] = Field(description="who may add members besides owner and admins")
    muted_all: bool = Field(description="only the owner and admins may write")
    dissolved: bool = Field(description="dissolved by its owner: readable, takes no messages or changes")
    admins: list[int] = Field(description="ascending ids")
    muted: list[int] = Field(description="members who may read but not write; ascending ids")


class GroupChange(BaseModel):
    """The settings to change; a field left out (or null) stays as it is."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[str | None, Field(min_length=1, max_length=MAX_NAME)] = None
    description: Annotated[str | None, Field(max_length=MAX_DESCRIPTION)] = None
    add_policy: Literal["everyone", "admins"] | None = None
    muted_all: StrictBool | None = None


class RoleChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["admin", "member"]


class MuteChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    muted: StrictBool


class OwnerChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: Annotated[DbId, Field(description="the member who becomes owner (the old owner becomes an admin)")]
