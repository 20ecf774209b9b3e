"""accounts: deleted accounts and the list of a user's logins (issue 18)

users.deleted_at: set once the user deleted their account (the row stays, so that their messages
keep a sender; the username is freed: it becomes `deleted:<id>`, which no sign-up can take);
logins: one row per login (refresh-token family) made by a password or authorization-code grant,
with the device it was made on and when it was last used (a grant, a refresh, an open socket), so
that a user can list their logins and end one.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 16:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('users', sa.Column('deleted_at', sa.BigInteger(), nullable=True))
    op.create_table('logins',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('family', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('device_name', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('last_seen_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('family', name='uq_logins_family')
    )
    op.create_index('ix_logins_user', 'logins', ['user_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_logins_user', table_name='logins')
    op.drop_table('logins')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('deleted_at')
