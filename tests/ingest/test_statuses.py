"""Delivery statuses from Meta webhooks: forward only, exact campaign counters, early statuses reconciled."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from libs import contracts
from libs.db.engine import Database
from libs.db.models import Message, MessageStatus, WebhookStatus
from libs.ingest.process import process_webhook
from libs.messages.status_store import apply_pending, record_sent_async
from libs.settings import Settings
from tests.ingest import factories as f
from tests.ingest.conftest import Ingest

OUT1 = "wamid.HBgLOUTBOUND1"  # Meta's documented delivered / read examples
OUT2 = "wamid.HBgLOUTBOUND2"  # Meta's documented failed example
T0 = 1_750_030_000


def at(ts: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def record_sent(settings: Settings, message_id: int, wamid: str) -> None:
    """The sender's record of an accepted send, through its asyncio pool."""

    async def run() -> None:
        pool = AsyncConnectionPool(settings.libpq_url, min_size=1, max_size=1, open=False, kwargs={"autocommit": True})
        async with pool:
            await record_sent_async(pool, message_id, wamid)

    asyncio.run(run())


@pytest.fixture
def ids(db: Database) -> tuple[int, int]:
    """A company and its Meta connection."""
    company_id = f.company(db)
    return company_id, f.meta_connection(db, company_id)


class TestDocumentedExamples:
    def test_delivered_then_read_then_failed(self, ingest: Ingest, db: Database, ids: tuple[int, int]) -> None:
        # Given two sent messages with the wamids of Meta's examples
        one = f.outbound(db, *ids, external_id=OUT1)
        two = f.outbound(db, *ids, external_id=OUT2)
        # When the documented delivered example arrives
        row = ingest.meta(f.fixture("meta_status_delivered.json"))
        # Then the first message is delivered at the webhook's timestamp
        assert (row.status, row.item_count, row.error) == (WebhookStatus.PROCESSED, 1, None)
        first = f.message(db, one)
        assert first.status == MessageStatus.DELIVERED
        assert first.delivered_at == at(1750030080)
        # When the read example arrives
        ingest.meta(f.fixture("meta_status_read.json"))
        # Then it is read, its delivery time untouched
        first = f.message(db, one)
        assert (first.status, first.delivered_at, first.read_at) == (
            MessageStatus.READ,
            at(1750030080),
            at(1750030090),
        )
        # When the failed example arrives for the second message
        ingest.meta(f.fixture("meta_status_failed.json"))
        # Then it fails with Meta's code and title, and no delivery time is invented
        second = f.message(db, two)
        assert second.status == MessageStatus.FAILED
        assert second.error_code == 131049
        assert second.error_title == "This message was not delivered to maintain healthy ecosystem engagement."
        assert second.failed_at == at(1751142888)
        assert (second.delivered_at, second.read_at) == (None, None)


class TestForwardOnly:
    def test_read_then_late_delivered_stays_read(self, ingest: Ingest, db: Database, ids: tuple[int, int]) -> None:
        message_id = f.outbound(db, *ids, external_id="wamid.FO1")
        ingest.meta(f.meta_statuses(f.meta_status("wamid.FO1", "read", timestamp=T0 + 20)))
        ingest.meta(f.meta_statuses(f.meta_status("wamid.FO1", "delivered", timestamp=T0 + 10)))
        row = f.message(db, message_id)
        assert row.status == MessageStatus.READ
        # Skipping delivered filled it in at the read time; the late one does not rewrite it
        assert (row.delivered_at, row.read_at) == (at(T0 + 20), at(T0 + 20))

    def test_sent_to_read_fills_delivered(self, ingest: Ingest, db: Database, ids: tuple[int, int]) -> None:
        message_id = f.outbound(db, *ids, external_id="wamid.SKIP")
        ingest.meta(f.meta_statuses(f.meta_status("wamid.SKIP", "read", timestamp=T0)))
        row = f.message(db, message_id)
        assert (row.status, row.delivered_at, row.read_at) == (MessageStatus.READ, at(T0), at(T0))

    def test_failed_after_read_is_ignored(self, ingest: Ingest, db: Database, ids: tuple[int, int]) -> None:
        message_id = f.outbound(db, *ids, external_id="wamid.FAR")
        ingest.meta(f.meta_statuses(f.meta_status("wamid.FAR", "read", timestamp=T0)))
        ingest.meta(f.meta_statuses(f.failed_status("wamid.FAR", timestamp=T0 + 5)))
        row = f.message(db, message_id)
        assert row.status == MessageStatus.READ
        assert (row.failed_at, row.error_code, row.error_title) == (None, None, None)

    def test_nothing_leaves_failed(self, ingest: Ingest, db: Database, ids: tuple[int, int]) -> None:
        message_id = f.outbound(db, *ids, external_id="wamid.DEAD")
        ingest.meta(f.meta_statuses(f.failed_status("wamid.DEAD", timestamp=T0)))
        ingest.meta(f.meta_statuses(f.meta_status("wamid.DEAD", "read", timestamp=T0 + 5)))
        row = f.message(db, message_id)
        assert (row.status, row.read_at) == (MessageStatus.FAILED, None)

    def test_same_status_twice_changes_nothing(self, ingest: Ingest, db: Database, ids: tuple[int, int]) -> None:
        message_id = f.outbound(db, *ids, external_id="wamid.TWICE")
        ingest.meta(f.meta_statuses(f.meta_status("wamid.TWICE", "delivered", timestamp=T0)))
        before = f.message(db, message_id)
        # A second, different body (another timestamp) with the same status
        row = ingest.meta(f.meta_statuses(f.meta_status("wamid.TWICE", "delivered", timestamp=T0 + 60)))
        after = f.message(db, message_id)
        assert row.status == WebhookStatus.PROCESSED
        assert (after.status, after.delivered_at, after.updated_at) == (
            MessageStatus.DELIVERED,
            at(T0),
            before.updated_at,
        )

    def test_inbound_message_with_that_wamid_is_never_touched(
        self, ingest: Ingest, db: Database, ids: tuple[int, int]
    ) -> None:
        ingest.meta(f.meta_payload(f.meta_change(messages=[f.meta_message("wamid.IN", "text", {"body": "x"})])))
        ingest.meta(f.meta_statuses(f.meta_status("wamid.IN", "read", timestamp=T0)))
        assert f.message_by_external_id(db, "wamid.IN").status == MessageStatus.RECEIVED


class TestCampaignCounters:
    def test_counters_follow_each_message_exactly(self, ingest: Ingest, db: Database, ids: tuple[int, int]) -> None:
        # Given a campaign whose four messages were sent (and counted as sent by the sender)
        campaign_id = f.campaign(db, *ids, sent_count=4)
        wamids = ["wamid.K1", "wamid.K2", "wamid.K3", "wamid.K4"]
        for n, wamid in enumerate(wamids):
            f.outbound(db, *ids, external_id=wamid, campaign_id=campaign_id, recipient=f"55119000000{n}")
        # When: K1 delivered then read; K2 read (delivered skipped); K3 failed; K4 delivered, then a stale failed
        ingest.meta(f.meta_statuses(f.meta_status("wamid.K1", "delivered"), f.meta_status("wamid.K2", "read")))
        ingest.meta(f.meta_statuses(f.meta_status("wamid.K1", "read"), f.failed_status("wamid.K3")))
        ingest.meta(f.meta_statuses(f.meta_status("wamid.K4", "delivered")))
        ingest.meta(f.meta_statuses(f.failed_status("wamid.K4", timestamp=T0 + 999_999)))
        # Then every counter matches the messages' states
        assert f.counters(db, campaign_id) == {"sent": 4, "delivered": 3, "read": 2, "failed": 1}
        statuses = sorted(str(m.status) for m in f.messages(db))
        assert statuses == ["delivered", "failed", "read", "read"]

    def test_same_job_processed_twice_counts_once(
        self, db: Database, broker: Any, settings: Settings, ids: tuple[int, int]
    ) -> None:
        # Given a stored status webhook for a campaign message
        campaign_id = f.campaign(db, *ids)
        f.outbound(db, *ids, external_id="wamid.ONCE", campaign_id=campaign_id)
        body = f.dumps(f.meta_statuses(f.meta_status("wamid.ONCE", "read")))
        webhook_id = f.webhook_row(db, body, status=WebhookStatus.ENQUEUED)
        # When its job runs twice (a redelivery after a lost ack)
        first = process_webhook(db, webhook_id)
        second = process_webhook(db, webhook_id)
        # Then it is applied once, the redelivery a no-op
        assert first is not None and first.statuses == {"applied": 1}
        assert second is None
        assert f.counters(db, campaign_id) == {"sent": 0, "delivered": 1, "read": 1, "failed": 0}

    def test_job_enqueued_twice_on_the_worker_counts_once(
        self, ingest: Ingest, db: Database, broker: Any, ids: tuple[int, int]
    ) -> None:
        campaign_id = f.campaign(db, *ids)
        f.outbound(db, *ids, external_id="wamid.TWIN", campaign_id=campaign_id)
        body = f.dumps(f.meta_statuses(f.meta_status("wamid.TWIN", "delivered")))
        webhook_id = f.webhook_row(db, body, status=WebhookStatus.ENQUEUED)
        for _ in range(2):
            contracts.PROCESS_WEBHOOK.send(contracts.ProcessWebhook(webhook_id), broker=broker)
        ingest.drain()
        assert f.webhook(db, webhook_id).status == WebhookStatus.PROCESSED
        assert f.counters(db, campaign_id) == {"sent": 0, "delivered": 1, "read": 0, "failed": 0}

    def test_failure_reported_for_a_message_still_sending_counts_sent_and_failed_only(
        self, ingest: Ingest, db: Database, ids: tuple[int, int]
    ) -> None:
        # Given a campaign message Meta accepted, but whose send we never recorded (no wamid on our row)
        campaign_id = f.campaign(db, *ids)
        message_id = f.outbound(db, *ids, status=MessageStatus.SENDING, campaign_id=campaign_id)
        # When Meta reports it failed, echoing our id in biz_opaque_callback_data
        failed = f.failed_status("wamid.LOST", code=131026, title="Message undeliverable")
        failed["biz_opaque_callback_data"] = str(message_id)
        ingest.meta(f.meta_statuses(failed))
        # Then it is reconciled as failed; it counts as sent (Meta accepted it) and failed, never delivered/read
        row = f.message(db, message_id)
        assert (row.status, row.external_id, row.error_code) == (MessageStatus.FAILED, "wamid.LOST", 131026)
        assert (row.delivered_at, row.read_at) == (None, None)
        assert f.counters(db, campaign_id) == {"sent": 1, "delivered": 0, "read": 0, "failed": 1}
        # And the sender recording the send later changes nothing
        record_sent(ingest.edge.settings, message_id, "wamid.LOST")
        assert f.message(db, message_id).status == MessageStatus.FAILED
        assert f.counters(db, campaign_id) == {"sent": 1, "delivered": 0, "read": 0, "failed": 1}


class TestEarlyStatuses:
    def test_status_for_unknown_wamid_is_kept_then_applied_when_the_send_is_recorded(
        self, ingest: Ingest, db: Database, settings: Settings, ids: tuple[int, int]
    ) -> None:
        # Given a campaign message still being sent
        campaign_id = f.campaign(db, *ids)
        message_id = f.outbound(db, *ids, status=MessageStatus.SENDING, campaign_id=campaign_id)
        # When delivered and read arrive before the sender stored the wamid
        row = ingest.meta(
            f.meta_statuses(
                f.meta_status("wamid.EARLY", "delivered", timestamp=T0 + 1),
                f.meta_status("wamid.EARLY", "read", timestamp=T0 + 2),
            )
        )
        # Then both are kept, and the webhook is processed
        assert (row.status, row.item_count) == (WebhookStatus.PROCESSED, 2)
        kept = f.pending(db)
        assert [(p.external_id, p.status, p.occurred_at) for p in kept] == [
            ("wamid.EARLY", "delivered", at(T0 + 1)),
            ("wamid.EARLY", "read", at(T0 + 2)),
        ]
        assert f.message(db, message_id).status == MessageStatus.SENDING
        # When the sender records the accepted send
        record_sent(settings, message_id, "wamid.EARLY")
        # Then the kept statuses are applied in order and removed
        message = f.message(db, message_id)
        assert (message.status, message.external_id) == (MessageStatus.READ, "wamid.EARLY")
        assert (message.delivered_at, message.read_at) == (at(T0 + 1), at(T0 + 2))
        assert message.sent_at is not None
        assert f.pending(db) == []
        assert f.counters(db, campaign_id) == {"sent": 1, "delivered": 1, "read": 1, "failed": 0}

    def test_early_failure_keeps_its_code_and_title(
        self, ingest: Ingest, db: Database, settings: Settings, ids: tuple[int, int]
    ) -> None:
        message_id = f.outbound(db, *ids, status=MessageStatus.SENDING)
        ingest.meta(f.meta_statuses(f.failed_status("wamid.EF", code=131049, title="Withheld", timestamp=T0)))
        [kept] = f.pending(db)
        assert (kept.status, kept.error_code, kept.error_title) == ("failed", 131049, "Withheld")
        record_sent(settings, message_id, "wamid.EF")
        message = f.message(db, message_id)
        assert (message.status, message.error_code, message.error_title) == (MessageStatus.FAILED, 131049, "Withheld")
        assert message.failed_at == at(T0)
        assert f.pending(db) == []

    def test_sync_path_applies_pending(self, ingest: Ingest, db: Database, ids: tuple[int, int]) -> None:
        # Given a delivered status kept for a wamid we did not know
        message_id = f.outbound(db, *ids, status=MessageStatus.SENDING)
        ingest.meta(f.meta_statuses(f.meta_status("wamid.SYNC", "delivered", timestamp=T0)))
        # When the send is recorded through the sync path, then pending statuses applied
        with db.session() as session:
            row = session.get(Message, message_id)
            assert row is not None
            row.external_id, row.status, row.sent_at = "wamid.SYNC", MessageStatus.SENT, at(T0 - 1)
            session.flush()
            applied = apply_pending(session, ids[1], "wamid.SYNC")
        # Then it is applied and removed
        assert applied == 1
        assert f.message(db, message_id).status == MessageStatus.DELIVERED
        assert f.pending(db) == []

    def test_biz_opaque_callback_data_reconciles_a_message_without_wamid(
        self, ingest: Ingest, db: Database, settings: Settings, ids: tuple[int, int]
    ) -> None:
        # Given a message the provider accepted but whose wamid we never wrote (crash in between)
        message_id = f.outbound(db, *ids, status=MessageStatus.SENDING)
        # When a delivered status echoes our id in biz_opaque_callback_data
        status = f.meta_status("wamid.RECON", "delivered", timestamp=T0, biz_opaque_callback_data=str(message_id))
        row = ingest.meta(f.meta_statuses(status))
        # Then the message gets its wamid and advances; nothing is kept as pending
        message = f.message(db, message_id)
        assert (message.external_id, message.status) == ("wamid.RECON", MessageStatus.DELIVERED)
        assert (message.sent_at, message.delivered_at) == (at(T0), at(T0))
        assert f.pending(db) == []
        assert row.item_count == 1
        # And a later status finds it by wamid
        ingest.meta(f.meta_statuses(f.meta_status("wamid.RECON", "read", timestamp=T0 + 5)))
        assert f.message(db, message_id).status == MessageStatus.READ

    def test_callback_data_never_steals_a_message_with_another_wamid(
        self, ingest: Ingest, db: Database, ids: tuple[int, int]
    ) -> None:
        message_id = f.outbound(db, *ids, external_id="wamid.MINE")
        status = f.meta_status("wamid.OTHER", "read", biz_opaque_callback_data=str(message_id))
        ingest.meta(f.meta_statuses(status))
        assert f.message(db, message_id).status == MessageStatus.SENT
        assert [(p.external_id, p.client_ref) for p in f.pending(db)] == [("wamid.OTHER", str(message_id))]
