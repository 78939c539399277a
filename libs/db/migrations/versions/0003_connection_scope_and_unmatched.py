"""provider ids and statuses scoped to their connection; unmatched webhooks kept; dead sends by message

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07

* ``messages``: a provider id (wamid, Baileys ``key.id``) is unique per connection, not globally: when one
  zapq company messages another, the sender's outbound row and the receiver's inbound copy carry the same id.
* ``pending_statuses``: kept with the connection whose number reported them; rows kept before this revision
  have no connection and still match any.
* ``webhooks.unmatched``: the numbers (phone_number_ids, bridge instances) whose messages a webhook held
  without a connection; such a webhook is ``unmatched`` (a new value of the varchar status) until applied.
* ``dead_letters``: an index on the message id of dead-lettered sends, for the send sweep.
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

    op.add_column('webhooks', sa.Column('unmatched', postgresql.ARRAY(sa.Text()), nullable=True))
    op.create_index(
        'ix_webhooks_unmatched', 'webhooks', ['id'], unique=False, postgresql_where=sa.text("status = 'unmatched'")
    )
    op.create_index(
        'ix_webhooks_unmatched_keys', 'webhooks', ['unmatched'], unique=False, postgresql_using='gin',
        postgresql_where=sa.text("status = 'unmatched'"),
    )

    op.create_index(
        'ix_dead_letters_send_message', 'dead_letters', [sa.text("(kwargs ->> 'message_id')")], unique=False,
        postgresql_where=sa.text("queue_name IN ('messages.urgent', 'messages', 'messages.low')"),
    )


def downgrade() -> None:
    op.drop_index('ix_dead_letters_send_message', table_name='dead_letters')
    # Kept webhooks become processed (what they were before this revision: their messages skipped).
    op.execute("UPDATE webhooks SET status = 'processed' WHERE status = 'unmatched'")
    op.drop_index('ix_webhooks_unmatched_keys', table_name='webhooks')
    op.drop_index('ix_webhooks_unmatched', table_name='webhooks')
    op.drop_column('webhooks', 'unmatched')

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
