"""messaging-limit budget and quality signals (issue 18, items 4-5)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07

Connections gain the business portfolio they share Meta's messaging limit with (``portfolio_id``; empty: the
connection is its own portfolio), an operator's override of that limit (``messaging_limit``) and what Meta
last said about the number: its limit tier, quality rating, throughput level and the last quality event.
Why the system paused a campaign (a quality flag) goes in ``campaigns.status_reason`` (migration 0011).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('connections', sa.Column('portfolio_id', sa.String(64), nullable=True))
    op.add_column('connections', sa.Column('messaging_limit', sa.Integer(), nullable=True))
    op.add_column('connections', sa.Column('messaging_tier', sa.String(32), nullable=True))
    op.add_column('connections', sa.Column('quality_rating', sa.String(16), nullable=True))
    op.add_column('connections', sa.Column('throughput_level', sa.String(32), nullable=True))
    op.add_column('connections', sa.Column('quality_event', sa.String(64), nullable=True))
    op.add_column('connections', sa.Column('quality_updated_at', sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint(
        'ck_connections_messaging_limit', 'connections', 'messaging_limit IS NULL OR messaging_limit >= 0'
    )


def downgrade() -> None:
    op.drop_constraint('ck_connections_messaging_limit', 'connections', type_='check')
    for column in (
        'quality_updated_at', 'quality_event', 'throughput_level', 'quality_rating', 'messaging_tier',
        'messaging_limit', 'portfolio_id',
    ):
        op.drop_column('connections', column)
