"""webhooks carry the trace context of the request that stored them

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07

``traceparent``: the W3C context of the traced ``POST /webhooks/...`` span that stored the webhook, so the span
applying it joins that trace whichever job applies it — its first, a group's fallback, a sweep's re-enqueue after
a lost enqueue, a replay (:mod:`libs.tracing`). NULL while tracing is off and for a trace sampled out. Nullable, no
default: adding it rewrites nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # the edge writes this table continuously: fail fast rather than queue its inserts behind the ALTER's lock
    op.execute("SET lock_timeout = '10s'")
    op.add_column('webhooks', sa.Column('traceparent', sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column('webhooks', 'traceparent')
