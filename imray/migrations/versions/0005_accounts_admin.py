"""accounts admin: disabled users, bot accounts, clients bound to a bot, revoked clients

users.disabled_at: set while an operator has the account disabled (every grant refused);
users.is_bot: an account made for a confidential client, with no password that can match;
oauth_clients.bot_user_id: the bot a client sends as; oauth_clients.revoked_at: the client is
gone (its grants refused, its tokens refused by the server API within a few seconds).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 13:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('users', sa.Column('disabled_at', sa.BigInteger(), nullable=True))
    op.add_column('users', sa.Column('is_bot', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column('oauth_clients', sa.Column('bot_user_id', sa.BigInteger(), nullable=True))
    op.add_column('oauth_clients', sa.Column('revoked_at', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('oauth_clients') as batch:
        batch.drop_column('revoked_at')
        batch.drop_column('bot_user_id')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('is_bot')
        batch.drop_column('disabled_at')
