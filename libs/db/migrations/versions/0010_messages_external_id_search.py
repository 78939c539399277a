"""messages searchable by their provider id alone (the console's wamid search)

Revision ID: 0010
Revises: 0005
Create Date: 2026-12-07

``GET /api/messages?external_id=wamid.…`` (the dashboard's message search) finds a message by its provider id
without knowing its connection: the unique index on (connection_id, external_id) cannot serve that, this
partial index on external_id can. Built without blocking writes (outside the migration's transaction).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index('ix_messages_external_id', table_name='messages', postgresql_concurrently=True, if_exists=True)
        op.create_index(
            'ix_messages_external_id', 'messages', ['external_id'], postgresql_concurrently=True,
            postgresql_where=sa.text('external_id IS NOT NULL'),
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index('ix_messages_external_id', table_name='messages', postgresql_concurrently=True, if_exists=True)
