"""API keys (hashed, scoped, per company) and the audit log

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

* ``api_keys``: one row per issued key ``zq_<key_id>_<secret>``; only the SHA-256 of the secret is kept.
  ``company_id`` NULL: a key for every company (operators); ``scopes`` what it may do.
* ``audit_log``: every change made through the API or the CLI — when, by which key (or ``cli``), what, on what.

Both tables are new and small: nothing to roll out around.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'api_keys',
        sa.Column('id', sa.BigInteger(), primary_key=True),
        sa.Column('key_id', sa.String(length=32), nullable=False),
        sa.Column('secret_hash', sa.String(length=64), nullable=False),
        sa.Column('company_id', sa.BigInteger(), sa.ForeignKey('companies.id', ondelete='CASCADE'), nullable=True),
        sa.Column('name', sa.String(length=200), server_default='', nullable=False),
        sa.Column('scopes', postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index('uq_api_keys_key_id', 'api_keys', ['key_id'], unique=True)
    op.create_index('ix_api_keys_company', 'api_keys', ['company_id'])
    op.create_table(
        'audit_log',
        sa.Column('id', sa.BigInteger(), primary_key=True),
        sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('actor', sa.String(length=64), nullable=False),
        sa.Column('company_id', sa.BigInteger(), nullable=True),
        sa.Column('action', sa.String(length=120), nullable=False),
        sa.Column('target', sa.String(length=200), nullable=True),
        sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )
    op.create_index('ix_audit_log_at', 'audit_log', ['at'])
    op.create_index('ix_audit_log_company_at', 'audit_log', ['company_id', 'at'])


def downgrade() -> None:
    op.drop_index('ix_audit_log_company_at', table_name='audit_log')
    op.drop_index('ix_audit_log_at', table_name='audit_log')
    op.drop_table('audit_log')
    op.drop_index('ix_api_keys_company', table_name='api_keys')
    op.drop_index('uq_api_keys_key_id', table_name='api_keys')
    op.drop_table('api_keys')
