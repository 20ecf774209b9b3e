"""conversation settings: a user's pinned and muted conversations

read_cursors.pinned_at: when the user pinned the conversation (ms; 0 when not pinned), which sorts
pinned ones first in the conversation list; read_cursors.muted: the user muted it (the list shows
it; offline notifications skip it).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 16:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('read_cursors', sa.Column('pinned_at', sa.BigInteger(), nullable=False, server_default='0'))
    op.add_column('read_cursors', sa.Column('muted', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('read_cursors') as batch:
        batch.drop_column('muted')
        batch.drop_column('pinned_at')
