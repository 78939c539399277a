"""WhatsApp rules: the customer-service window, a connection's window rule, failure reasons, opt-outs

Revision ID: 0008
Revises: 0005 (re-chained onto main when main was merged in)
Create Date: 2026-12-07

* ``service_windows``: per connection and contact (wa_id), when the customer last wrote (inbound messages move
  it forward only). A free-form message is allowed for 24 h after it.
* ``connections.service_window``: ``enforce`` (the default: existing connections enforce the window) or
  ``off`` (test numbers, load tests).
* ``messages.failure_reason``: the rule a failed message broke (``outside_service_window``, ``marketing_limit``,
  ``template_rejected``, …): a code the CRM can act on, beside Meta's own code and title.
* ``opt_outs``: a company's suppression list (numbers that asked not to be messaged); ``companies`` gets its
  own opt-out / opt-in keywords (``NULL``: the defaults of ``libs.rules.optouts``); ``campaigns`` counts the
  recipients skipped as suppressed.
* ``ix_messages_rule_failures``: the messages that failed by a rule, by time (``zapq stats``, ``/metrics``);
  built concurrently (no write lock on ``messages``), so it is created outside the migration's transaction.

Adding the nullable / defaulted columns rewrites nothing (Postgres ≥ 11 stores a constant default in the
catalogue); the new tables are empty. Rolling out: migrate before the new code starts (the new sender's claim
reads ``service_window``); the previous version ignores the new columns.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '10s'")
    op.create_table(
        'service_windows',
        sa.Column('connection_id', sa.BigInteger(), sa.ForeignKey('connections.id', ondelete='CASCADE'),
                  primary_key=True),
        sa.Column('wa_id', sa.String(32), primary_key=True),
        sa.Column('last_inbound_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.add_column(
        'connections',
        sa.Column('service_window', sa.String(16), nullable=False, server_default='enforce'),
    )
    op.create_check_constraint(
        'ck_connections_service_window', 'connections', "service_window IN ('enforce', 'off')"
    )
    op.add_column('messages', sa.Column('failure_reason', sa.String(64), nullable=True))
    op.add_column(
        'campaigns', sa.Column('suppressed_count', sa.Integer(), nullable=False, server_default='0')
    )
    op.add_column('companies', sa.Column('opt_out_keywords', sa.ARRAY(sa.Text()), nullable=True))
    op.add_column('companies', sa.Column('opt_in_keywords', sa.ARRAY(sa.Text()), nullable=True))
    op.create_table(
        'opt_outs',
        sa.Column('company_id', sa.BigInteger(), sa.ForeignKey('companies.id', ondelete='CASCADE'),
                  primary_key=True),
        sa.Column('phone', sa.String(32), primary_key=True),
        sa.Column('source', sa.String(32), nullable=False, server_default='api'),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False, server_default=sa.text('now()')),
    )
    with op.get_context().autocommit_block():
        # messages is large and busy: build without blocking writes (again, if an earlier run left it invalid)
        op.drop_index('ix_messages_rule_failures', table_name='messages', postgresql_concurrently=True,
                      if_exists=True)
        op.create_index(
            'ix_messages_rule_failures', 'messages', ['failed_at'], postgresql_concurrently=True,
            postgresql_where=sa.text('failure_reason IS NOT NULL'),
        )


def downgrade() -> None:
    op.drop_table('opt_outs')
    op.drop_index('ix_messages_rule_failures', table_name='messages')
    op.drop_column('companies', 'opt_in_keywords')
    op.drop_column('companies', 'opt_out_keywords')
    op.drop_column('campaigns', 'suppressed_count')
    op.drop_column('messages', 'failure_reason')
    op.drop_constraint('ck_connections_service_window', 'connections', type_='check')
    op.drop_column('connections', 'service_window')
    op.drop_table('service_windows')
