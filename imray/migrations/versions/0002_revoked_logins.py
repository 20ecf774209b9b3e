"""revoked logins: the denylist the embedded stack's processes follow

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 04:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('revoked_logins',
    sa.Column('family', sa.String(length=32), nullable=False),
    sa.Column('revoked_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('family')
    )
    op.create_index(op.f('ix_revoked_logins_revoked_at'), 'revoked_logins', ['revoked_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_revoked_logins_revoked_at'), table_name='revoked_logins')
    op.drop_table('revoked_logins')
