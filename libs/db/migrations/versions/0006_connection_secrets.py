"""connection credentials encrypted at rest; per-connection Baileys webhook key and secret

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-07

* ``connections.webhook_key`` / ``webhook_secret``: a Baileys connection's own webhook URL
  (``/webhooks/baileys/{webhook_key}``) and the secret its bridge sends there (encrypted). Connections made
  before this revision have neither until one is issued (``POST /api/connections/{id}/webhook-secret``);
  until then their bridge keeps posting to ``/webhooks/baileys`` with the global secret.
* ``access_token`` and ``bridge_api_key`` of every existing row are encrypted (Fernet, :mod:`libs.secrets`)
  with the newest key of ``ZAPQ_SECRETS_KEYS``. The keys come from ``zapq migrate`` (its settings), else from
  the environment; the revision fails, changing nothing, when rows have credentials and no key is set.
  A value some configured key already decrypts is left as it is (safe to run again).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

from libs.secrets import CannotDecryptError, Secrets, SecretsKeyMissingError

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

#: The encrypted columns this revision converts.
CREDENTIALS = ('access_token', 'bridge_api_key')


def _secrets() -> Secrets:
    """The cipher of the keys ``libs.db.migrate.upgrade`` was given, else of the environment's settings."""
    keys = context.config.attributes.get('secrets_keys')
    if keys is None:
        from libs.settings import load_settings

        keys = load_settings().secrets_key_list
    return Secrets(keys)


def _rows() -> list[sa.Row[tuple[int, str | None, str | None]]]:
    return list(
        op.get_bind().execute(
            sa.text(
                'SELECT id, access_token, bridge_api_key FROM connections '
                'WHERE access_token IS NOT NULL OR bridge_api_key IS NOT NULL ORDER BY id FOR UPDATE'
            )
        )
    )


def _convert(convert_one: str) -> None:
    rows = _rows()
    if not rows:
        return
    try:
        secrets = _secrets()
    except SecretsKeyMissingError:
        raise RuntimeError(
            f'ZAPQ_SECRETS_KEYS is not set: {len(rows)} connections hold credentials to encrypt. Set it (one key: '
            '`zapq secrets new-key`) and run the migration again; nothing was changed.'
        ) from None

    def encrypt(value: str) -> str:
        try:
            secrets.decrypt(value)
            return value  # already encrypted under a configured key
        except CannotDecryptError:
            return secrets.encrypt(value)

    def decrypt(value: str) -> str:
        try:
            return secrets.decrypt(value)
        except CannotDecryptError:
            return value  # never encrypted

    change = encrypt if convert_one == 'encrypt' else decrypt
    update = sa.text('UPDATE connections SET access_token = :a, bridge_api_key = :b WHERE id = :id')
    for row in rows:
        op.get_bind().execute(
            update,
            {
                'id': row[0],
                'a': None if row[1] is None else change(row[1]),
                'b': None if row[2] is None else change(row[2]),
            },
        )


def upgrade() -> None:
    op.execute("SET lock_timeout = '10s'")
    op.add_column('connections', sa.Column('webhook_key', sa.String(length=64), nullable=True))
    op.add_column('connections', sa.Column('webhook_secret', sa.Text(), nullable=True))
    op.create_index(
        'uq_connections_webhook_key', 'connections', ['webhook_key'], unique=True,
        postgresql_where=sa.text('webhook_key IS NOT NULL'),
    )
    _convert('encrypt')


def downgrade() -> None:
    _convert('decrypt')
    op.drop_index('uq_connections_webhook_key', table_name='connections')
    op.drop_column('connections', 'webhook_secret')
    op.drop_column('connections', 'webhook_key')
