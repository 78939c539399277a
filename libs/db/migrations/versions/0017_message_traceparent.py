"""outbound messages keep the trace context of the send that got their provider id

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07

``traceparent``: the W3C context of the traced ``message.send`` span that got the message its provider id
(written by the sender's record of the send). The statement applying a status webhook reads it from the row it
updates, so the ``message.status`` span and the status event's deliveries join the send's trace with no lookup of
their own (:mod:`libs.tracing`). It replaces a seven-day Redis key per traced send. NULL while tracing is off,
for a trace sampled out, and for inbound messages. Nullable, no default: adding it rewrites nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # the sender and the ingest workers write this table continuously: fail fast rather than queue behind the lock
    op.execute("SET lock_timeout = '10s'")
    op.add_column('messages', sa.Column('traceparent', sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column('messages', 'traceparent')
