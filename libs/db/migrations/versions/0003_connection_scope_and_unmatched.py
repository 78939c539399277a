"""provider ids and statuses scoped to their connection

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07

* ``messages``: a provider id (wamid, Baileys ``key.id``) is unique per connection, not globally: when one
  zapq company messages another, the sender's outbound row and the receiver's inbound copy carry the same id.
* ``pending_statuses``: kept with the connection whose number reported them; rows kept before this revision
  have no connection and still match any.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        'uq_messages_connection_external_id', 'messages', ['connection_id', 'external_id'], unique=True
    )
    op.drop_index('uq_messages_external_id', table_name='messages')

    op.add_column('pending_statuses', sa.Column('connection_id', sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        'pending_statuses_connection_id_fkey', 'pending_statuses', 'connections', ['connection_id'], ['id'],
        ondelete='CASCADE',
    )
    op.create_index(
        'uq_pending_statuses_connection_external_status', 'pending_statuses',
        ['connection_id', 'external_id', 'status'], unique=True,
    )
    op.drop_constraint('uq_pending_statuses_external_status', 'pending_statuses', type_='unique')


def downgrade() -> None:
    # Statuses kept for one connection become global again; a pair of rows sharing an id across connections
    # cannot be made unique again, so downgrading fails (by design) while such pairs exist.
    op.execute(
        "DELETE FROM pending_statuses p USING pending_statuses q "
        "WHERE p.external_id = q.external_id AND p.status = q.status AND p.id > q.id"
    )
    op.create_unique_constraint('uq_pending_statuses_external_status', 'pending_statuses', ['external_id', 'status'])
    op.drop_index('uq_pending_statuses_connection_external_status', table_name='pending_statuses')
    op.drop_constraint('pending_statuses_connection_id_fkey', 'pending_statuses', type_='foreignkey')
    op.drop_column('pending_statuses', 'connection_id')

    op.create_index('uq_messages_external_id', 'messages', ['external_id'], unique=True)
    op.drop_index('uq_messages_connection_external_id', table_name='messages')
