"""contacts: friend requests, the contact list, presence privacy and last-seen (issue 18)

contact_requests: a pending request from one user to another (one per ordered pair), with its
optional short message; contacts: an accepted pair, stored in both directions so that a user's
list is one index range; user_presence: a user's presence privacy (show_presence) and the time
their last live session closed (last_seen_at, ms), a row only once either is known.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 16:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('contact_requests',
    sa.Column('from_id', sa.BigInteger(), nullable=False),
    sa.Column('to_id', sa.BigInteger(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('from_id', 'to_id')
    )
    op.create_index('ix_contact_requests_to', 'contact_requests', ['to_id'], unique=False)
    op.create_table('contacts',
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('contact_id', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('user_id', 'contact_id')
    )
    op.create_table('user_presence',
    sa.Column('user_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('show_presence', sa.Boolean(), nullable=False, server_default=sa.true()),
    sa.Column('last_seen_at', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('user_id')
    )


def downgrade() -> None:
    op.drop_table('user_presence')
    op.drop_table('contacts')
    op.drop_index('ix_contact_requests_to', table_name='contact_requests')
    op.drop_table('contact_requests')
