"""Template catalogue: each Meta connection's WhatsApp templates, and why a campaign was paused

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

* ``whatsapp_templates``: the templates of a connection's WhatsApp Business Account (WABA) as Meta last
  reported them (``GET /{waba-id}/message_templates``, or a ``message_template_status_update`` webhook): name,
  language, status (APPROVED, PENDING, REJECTED, PAUSED, DISABLED, …), category, components (JSON, the text
  whose ``{{1}}`` placeholders set how many parameters a send needs). Per connection, not per WABA: a
  company only ever sees the templates its own connection's token fetched.
* ``template_catalogues``: per connection, when its catalogue last synced in full (``synced_at``: until it
  has once, template sends are not validated) and the last attempt's error.
* ``campaigns.status_reason``: why a campaign is paused when a rule paused it (a template paused or disabled
  by Meta), shown with the campaign and in its ``campaign.status`` event.

New tables and one nullable column: nothing is rewritten or locked for long.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '10s'")
    op.create_table(
        'whatsapp_templates',
        sa.Column('connection_id', sa.BigInteger(), sa.ForeignKey('connections.id', ondelete='CASCADE'),
                  primary_key=True),
        sa.Column('name', sa.String(512), primary_key=True),
        sa.Column('language', sa.String(16), primary_key=True),
        sa.Column('template_id', sa.String(64), nullable=True),
        sa.Column('status', sa.String(32), nullable=False),
        sa.Column('category', sa.String(32), nullable=True),
        sa.Column('components', postgresql.JSONB(), nullable=True),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('synced_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False, server_default=sa.text('now()')),
    )
    op.create_table(
        'template_catalogues',
        sa.Column('connection_id', sa.BigInteger(), sa.ForeignKey('connections.id', ondelete='CASCADE'),
                  primary_key=True),
        sa.Column('synced_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('template_count', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('attempted_at', sa.DateTime(timezone=True), nullable=False, server_default=sa.text('now()')),
        sa.Column('last_error', sa.Text(), nullable=True),
    )
    op.add_column('campaigns', sa.Column('status_reason', sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column('campaigns', 'status_reason')
    op.drop_table('template_catalogues')
    op.drop_table('whatsapp_templates')
