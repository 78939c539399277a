"""message history: earlier failures of a message that was retried

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A constant default: no table rewrite (Postgres >= 11 stores it in the catalogue).
    op.add_column(
        'messages',
        sa.Column('history', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"),
                  nullable=False),
    )


def downgrade() -> None:
    op.drop_column('messages', 'history')
