"""media: uploaded and fetched inbound media files (their bytes in the media storage)

Revision ID: 0013
Revises: 0010
Create Date: 2026-12-07

* ``media``: one row per file zapq keeps — an upload (``POST /api/media``) or the file of an inbound media
  message (fetched by the ``media`` job; unique per message, so fetching twice keeps one). ``storage_key``
  names the object in the local directory or S3 bucket; ``provider_ids`` caches each connection's provider
  media id of an upload with its expiry; ``expires_at`` drives the retention prune.

A new empty table: nothing is rewritten; the previous version ignores it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0013'
down_revision = '0010'
branch_labels = None
depends_on = None


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


def downgrade() -> None:
    op.drop_table('media')
