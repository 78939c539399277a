"""provider ids and statuses scoped to their connection; unmatched webhooks kept; dead sends by message

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

* ``messages``: a provider id (wamid, Baileys ``key.id``) is unique per connection, not globally: when one
  zapq company messages another, the sender's outbound row and the receiver's inbound copy carry the same id.
* ``pending_statuses``: kept with the connection whose number reported them; rows kept before this revision
  have no connection and still match any.
* ``webhooks.unmatched``: the numbers (phone_number_ids, bridge instances) whose messages a webhook held
  without a connection; such a webhook is ``unmatched`` (a new value of the varchar status) until applied.
* ``dead_letters``: an index on the message id of dead-lettered sends, for the send sweep.

Rolling out: the previous version's webhook-ingest workers insert with ``ON CONFLICT (external_id)``, which
needs the global index this revision drops; stop them (scale to 0) while it runs. The edge keeps accepting
and storing webhooks meanwhile; the new workers process them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


#: Indexes of large, busy tables are built without blocking writes (outside the migration's transaction).
CONCURRENT_INDEXES = (
    ('uq_messages_connection_external_id', 'messages', ['connection_id', 'external_id'], {'unique': True}),
    ('ix_webhooks_unmatched', 'webhooks', ['id'], {'postgresql_where': sa.text("status = 'unmatched'")}),
    (
        'ix_webhooks_unmatched_keys', 'webhooks', ['unmatched'],
        {'postgresql_using': 'gin', 'postgresql_where': sa.text("status = 'unmatched'")},
    ),
    (
        'ix_dead_letters_send_message', 'dead_letters', [sa.text("(kwargs ->> 'message_id')")],
        {'postgresql_where': sa.text("queue_name IN ('messages.urgent', 'messages', 'messages.low')")},
    ),
)


def upgrade() -> None:
    op.execute("SET lock_timeout = '10s'")
    op.add_column('webhooks', sa.Column('unmatched', postgresql.ARRAY(sa.Text()), nullable=True))

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

    with op.get_context().autocommit_block():
        for name, table, columns, options in CONCURRENT_INDEXES:
            # a build interrupted by an earlier run leaves an invalid index behind: build it again
            op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
            op.create_index(name, table, columns, postgresql_concurrently=True, **options)
        op.drop_index('uq_messages_external_id', table_name='messages', postgresql_concurrently=True)


def downgrade() -> None:
    op.drop_index('ix_dead_letters_send_message', table_name='dead_letters')
    # Kept webhooks become processed (what they were before this revision: their messages skipped).
    op.execute("UPDATE webhooks SET status = 'processed' WHERE status = 'unmatched'")
    op.drop_index('ix_webhooks_unmatched_keys', table_name='webhooks')
    op.drop_index('ix_webhooks_unmatched', table_name='webhooks')
    op.drop_column('webhooks', 'unmatched')

    # Statuses kept for one connection become global again (one row per id and status is kept).
    op.execute(
        "DELETE FROM pending_statuses p USING pending_statuses q "
        "WHERE p.external_id = q.external_id AND p.status = q.status AND p.id > q.id"
    )
    op.create_unique_constraint('uq_pending_statuses_external_status', 'pending_statuses', ['external_id', 'status'])
    op.drop_index('uq_pending_statuses_connection_external_status', table_name='pending_statuses')
    op.drop_constraint('pending_statuses_connection_id_fkey', 'pending_statuses', type_='foreignkey')
    op.drop_column('pending_statuses', 'connection_id')

    # A provider id stored by two connections (one company messaging another) cannot be made globally unique
    # again: downgrading fails, by design, while such pairs exist.
    op.create_index('uq_messages_external_id', 'messages', ['external_id'], unique=True)
    op.drop_index('uq_messages_connection_external_id', table_name='messages')
