"""client ids compared byte for byte: messages.client_id becomes VARBINARY on MySQL/MariaDB

Their collations compare "p" and "p " as equal (PAD SPACE), and "A" and "a" as well when
case-insensitive, where the shard's idempotency check does not: the second id's send failed
forever. SQLite's TEXT already compares bytes: nothing to do there.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 10:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def _server() -> bool:
    return op.get_bind().dialect.name in ("mysql", "mariadb")


def upgrade() -> None:
    if _server():
        op.alter_column('messages', 'client_id', existing_type=sa.String(length=64),
                        type_=mysql.VARBINARY(256), existing_nullable=False)


def downgrade() -> None:
    if _server():
        op.alter_column('messages', 'client_id', existing_type=mysql.VARBINARY(256),
                        type_=sa.String(length=64), existing_nullable=False)
