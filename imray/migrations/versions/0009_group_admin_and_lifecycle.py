"""group administration and message lifecycle (issue 18)

chat_groups: description, add_policy, muted_all, dissolved_at; group_members: role (the owner's row
becomes "owner"), muted; messages.meta (reply_to, mentions, edited, recalled, reactions, event);
group_outbox (a group change waiting for its seq'd event); message_reactions; hidden_messages
(deleted for one user); mentions.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 19:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from imray.storage.schema import ExactString

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('chat_groups', sa.Column('description', sa.String(512), nullable=False, server_default=''))
    op.add_column('chat_groups', sa.Column('add_policy', sa.String(8), nullable=False, server_default='everyone'))
    op.add_column('chat_groups', sa.Column('muted_all', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column('chat_groups', sa.Column('dissolved_at', sa.BigInteger(), nullable=True))
    op.add_column('group_members', sa.Column('role', sa.String(8), nullable=False, server_default='member'))
    op.add_column('group_members', sa.Column('muted', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute("UPDATE group_members SET role = 'owner' WHERE EXISTS (SELECT 1 FROM chat_groups "
               "WHERE chat_groups.id = group_members.group_id AND chat_groups.owner_id = group_members.user_id)")
    op.add_column('messages', sa.Column('meta', sa.Text(), nullable=True))
    op.create_table(
        'group_outbox',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), primary_key=True, autoincrement=True),
        sa.Column('conv', sa.String(40), nullable=False),
        sa.Column('actor_id', sa.BigInteger(), nullable=False),
        sa.Column('event_key', sa.String(32), nullable=False),
        sa.Column('event', sa.Text(), nullable=False),
        sa.Column('notify', sa.Text(), nullable=False),
        sa.Column('created_at', sa.BigInteger(), nullable=False),
    )
    op.create_index('ix_group_outbox_conv', 'group_outbox', ['conv'])
    op.create_index('ix_group_outbox_created_at', 'group_outbox', ['created_at'])
    op.create_table(
        'message_reactions',
        sa.Column('conv', sa.String(40), nullable=False),
        sa.Column('seq', sa.BigInteger(), nullable=False),
        sa.Column('user_id', sa.BigInteger(), nullable=False),
        sa.Column('emoji', ExactString(16), nullable=False),
        sa.PrimaryKeyConstraint('conv', 'seq', 'user_id', 'emoji'),
    )
    for name in ('hidden_messages', 'mentions'):
        op.create_table(
            name,
            sa.Column('user_id', sa.BigInteger(), nullable=False),
            sa.Column('conv', sa.String(40), nullable=False),
            sa.Column('seq', sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint('user_id', 'conv', 'seq'),
        )


def downgrade() -> None:
    for name in ('mentions', 'hidden_messages', 'message_reactions'):
        op.drop_table(name)
    op.drop_index('ix_group_outbox_created_at', 'group_outbox')
    op.drop_index('ix_group_outbox_conv', 'group_outbox')
    op.drop_table('group_outbox')
    with op.batch_alter_table('messages') as batch:
        batch.drop_column('meta')
    with op.batch_alter_table('group_members') as batch:
        batch.drop_column('muted')
        batch.drop_column('role')
    with op.batch_alter_table('chat_groups') as batch:
        batch.drop_column('dissolved_at')
        batch.drop_column('muted_all')
        batch.drop_column('add_policy')
        batch.drop_column('description')
