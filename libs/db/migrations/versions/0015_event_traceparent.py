"""events carry the trace context of the span that wrote them

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07

``traceparent``: the W3C context of the traced span that wrote the event (an inbound message stored, a status
applied), so the event's deliveries join that trace (:mod:`libs.tracing`). NULL while tracing is off, for a
trace sampled out and for events no span wrote. Nullable, no default: adding it rewrites nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('events', sa.Column('traceparent', sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column('events', 'traceparent')
