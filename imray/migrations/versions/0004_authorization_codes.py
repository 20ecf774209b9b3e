"""authorization codes (RFC 6749 §4.1 with PKCE): clients' exact redirect URIs and the codes issued

A code is stored by its hash, bound to its client, redirect URI and S256 challenge; used_at marks
it spent, and family names the login its redemption started, so that a replayed code revokes it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('oauth_clients', sa.Column('redirect_uris', sa.Text(), nullable=True))
    op.create_table('authorization_codes',
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('redirect_uri', sa.Text(), nullable=False),
    sa.Column('code_challenge', sa.String(length=128), nullable=False),
    sa.Column('scope', sa.String(length=255), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.Column('used_at', sa.BigInteger(), nullable=True),
    sa.Column('family', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('code_hash')
    )
    op.create_index(op.f('ix_authorization_codes_expires_at'), 'authorization_codes', ['expires_at'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_authorization_codes_expires_at'), table_name='authorization_codes')
    op.drop_table('authorization_codes')
    with op.batch_alter_table('oauth_clients') as batch:
        batch.drop_column('redirect_uris')
