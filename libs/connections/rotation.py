"""``zapq secrets rotate``: re-encrypt every stored credential under the newest key of ``ZAPQ_SECRETS_KEYS``.

Connections are read in id order, in batches, each batch locked and rewritten in one transaction (a
concurrent ``PATCH`` waits for it, so no change is lost). A value made by a key that is not configured stops
the rotation with :class:`libs.secrets.CannotDecryptError` naming the connection; batches already rewritten
stay rewritten (running it again is safe: a value already under the newest key is simply re-encrypted).
Once it has finished, older keys can be removed from ``ZAPQ_SECRETS_KEYS``.
"""

from __future__ import annotations

from dataclasses import dataclass

from libs.connections import store
from libs.db.engine import Database
from libs.secrets import CannotDecryptError, Secrets

#: Connections rewritten per transaction.
BATCH = 500


@dataclass(frozen=True)
class Rotated:
    """What a rotation rewrote."""

    connections: int
    values: int


def rotate_credentials(db: Database, secrets: Secrets, *, batch: int = BATCH) -> Rotated:
    """Re-encrypt every connection's credentials under ``secrets``' newest key."""
    after, connections, values = 0, 0, 0
    while True:
        with db.session() as session:
            rows = store.credentials_after(session, after, batch)
            for connection_id, *stored in rows:
                rotated: dict[str, str | None] = {}
                for name, value in zip(store.SECRET_COLUMNS, stored, strict=True):
                    try:
                        rotated[name] = None if value is None else secrets.rotate(value)
                    except CannotDecryptError as exc:
                        raise CannotDecryptError(f"connection {connection_id}, {name}: {exc}") from None
                    values += value is not None
                store.set_credentials(session, connection_id, rotated)
                connections += 1
        if len(rows) < batch:
            return Rotated(connections, values)
        after = rows[-1][0]
