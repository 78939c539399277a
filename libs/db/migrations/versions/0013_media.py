"""media: uploaded and fetched inbound media files (their bytes in the media storage)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

* ``media``: one row per file zapq keeps — an upload (``POST /api/media``) or the file of an inbound media
  message (fetched by the ``media`` job; unique per message, so fetching twice keeps one). ``storage_key``
  names the object in the local directory or S3 bucket; ``provider_ids`` caches each connection's provider
  media id of an upload with its expiry; ``expires_at`` drives the retention prune.

* ``ix_messages_media_pending``: a partial index of the inbound media messages whose file is neither stored
  (``payload.stored_media``) nor given up (``payload.media_error``) — what the scheduler's media sweep reads;
  built concurrently (no write lock on ``messages``), outside the migration's transaction.

A new empty table and a small partial index: nothing is rewritten; the previous version ignores both.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

#: Inbound media messages not yet stored nor given up (as ``libs.media.store.MEDIA_PENDING``, frozen here).
MEDIA_PENDING = (
    "direction = 'in' AND type IN ('image', 'video', 'audio', 'document', 'sticker', 'imageMessage', "
    "'videoMessage', 'audioMessage', 'documentMessage', 'documentWithCaptionMessage', 'stickerMessage') "
    "AND NOT payload ? 'stored_media' AND NOT payload ? 'media_error'"
)


def upgrade() -> None:
    op.create_table(
        'media',
        sa.Column('id', sa.String(40), primary_key=True),
        sa.Column('company_id', sa.BigInteger, sa.ForeignKey('companies.id', ondelete='CASCADE'), nullable=False),
        sa.Column('connection_id', sa.BigInteger, sa.ForeignKey('connections.id', ondelete='SET NULL')),
        sa.Column('message_id', sa.BigInteger, sa.ForeignKey('messages.id', ondelete='SET NULL')),
        sa.Column('direction', sa.String(32), nullable=False),
        sa.Column('mime_type', sa.String(128), nullable=False),
        sa.Column('size', sa.BigInteger, nullable=False),
        sa.Column('sha256', sa.String(64), nullable=False),
        sa.Column('filename', sa.Text),
        sa.Column('storage_key', sa.Text, nullable=False),
        sa.Column('provider_ids', postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False, server_default=sa.text('now()')),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index('uq_media_message', 'media', ['message_id'], unique=True,
                    postgresql_where=sa.text('message_id IS NOT NULL'))
    op.create_index('ix_media_expires_at', 'media', ['expires_at'])
    op.create_index('ix_media_company_created', 'media', ['company_id', 'created_at'])
    with op.get_context().autocommit_block():
        op.create_index(
            'ix_messages_media_pending', 'messages', ['created_at'], postgresql_concurrently=True, if_not_exists=True,
            postgresql_where=sa.text(MEDIA_PENDING),
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index('ix_messages_media_pending', table_name='messages', postgresql_concurrently=True, if_exists=True)
    op.drop_table('media')
