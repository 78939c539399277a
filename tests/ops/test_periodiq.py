"""The clock for real: ``periodiq services.scheduler`` enqueues the periodic jobs and ``dramatiq services.scheduler``
runs them, both as subprocesses on this session's database and Redis namespace.

periodiq ticks on minute boundaries, and once at start-up (every ``* * * * *`` job is due in any minute), so the
first tick is seen within seconds and the second at the next minute: the test waits on their effects, never on
a fixed sleep, and takes at most about 70 s.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from libs.db.engine import Database
from libs.db.models import Campaign, CampaignStatus, WebhookStatus
from libs.ops.processes import ProcessGroup
from libs.settings import Settings
from tests.faults.support import dramatiq_argv, logs, subprocess_env, wait_until
from tests.ingest import factories as f
from tests.sending.conftest import make_connection

#: The ``periodiq`` console script of this interpreter's environment (as the scheduler's container runs it).
PERIODIQ = str(Path(sys.executable).with_name("periodiq"))
#: periodiq's first tick: process start-up, plus up to 5 s when it starts in a minute's last seconds.
FIRST_TICK_S = 30.0
#: The next tick comes at the next minute boundary.
NEXT_TICK_S = 65.0


def finished_campaign(db: Database, company: int, connection: int) -> int:
    """A running campaign whose every message is final (here: none): what ``finish_campaigns`` closes."""
    with db.session() as session:
        row = Campaign(company_id=company, connection_id=connection, name="done", status=CampaignStatus.RUNNING)
        session.add(row)
        session.flush()
        return row.id


def campaign_status(db: Database, campaign_id: int) -> CampaignStatus:
    with db.session() as session:
        return session.execute(select(Campaign.status).where(Campaign.id == campaign_id)).scalar_one()


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_periodiq_enqueues_the_periodic_jobs_and_the_ops_worker_runs_them(
    db: Database, broker: Any, settings: Settings, tmp_path: Path
) -> None:
    # Given a webhook stored two minutes ago but never enqueued, and a running campaign with nothing left to send
    body = f.dumps(f.meta_payload(f.meta_change(messages=[f.meta_message("wamid.CLOCK1", "text", {"body": "x"})])))
    webhook_id = f.webhook_row(db, body, received_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2))
    company, connection = make_connection(db)
    first = finished_campaign(db, company, connection)
    group = ProcessGroup(env=subprocess_env(ZAPQ_HEARTBEAT_DIR=str(tmp_path)), log_dir=tmp_path)
    with group.running():
        # When the ops worker and the clock run as they do in production
        group.start("ops-worker", dramatiq_argv("services.scheduler", "-p", "1", "-t", "2"))
        group.start("periodiq", [PERIODIQ, "services.scheduler"])

        # Then the first tick's sweep enqueued the webhook for the ingest worker, and the campaign was closed
        def first_tick() -> bool:
            return f.webhook(db, webhook_id).status == WebhookStatus.ENQUEUED and campaign_status(db, first) == (
                CampaignStatus.COMPLETED
            )

        wait_until(first_tick, timeout=FIRST_TICK_S, what=lambda: "the first tick\n" + logs(tmp_path))
        queued = f.queued_kwargs(broker.client, settings.redis_namespace, "webhooks")
        assert [k["webhook_id"] for k in queued] == [webhook_id]

        # And the clock keeps ticking: a campaign finished after that tick is closed at the next minute
        second = finished_campaign(db, company, connection)
        wait_until(
            lambda: campaign_status(db, second) == CampaignStatus.COMPLETED,
            timeout=NEXT_TICK_S,
            what=lambda: "the next minute's tick\n" + logs(tmp_path),
        )
        assert "Scheduling" in (tmp_path / "periodiq.log").read_text()
