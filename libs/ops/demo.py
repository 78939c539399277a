"""``zapq demo``: migrate, start the system, send a signed Meta webhook, show it processed, stop cleanly."""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from libs.db.engine import Database
from libs.db.migrate import upgrade
from libs.db.models import WebhookStatus
from libs.ops import demo_store
from libs.ops.processes import ProcessGroup, free_port, wait_http
from libs.ops.seed import (
    DEMO_COMPANY_NAME,
    DEMO_DISPLAY_NUMBER,
    DEMO_PHONE_NUMBER_ID,
    FAKE_META_TOKEN,
    DemoStack,
    next_steps,
)
from libs.secrets import Secrets
from libs.settings import Settings
from libs.whatsapp.signature import sign_meta


def sample_webhook(
    wamid: str,
    phone_number_id: str = "106540352242922",
    *,
    sender: str = "16505551234",
    name: str = "Ana",
    text: str = "hello from the zapq demo",
) -> bytes:
    """Meta's documented incoming-text example with a fresh wamid (``ensure_ascii`` as Meta signs)."""
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": phone_number_id,
                            },
                            "contacts": [{"profile": {"name": name}, "wa_id": sender}],
                            "messages": [
                                {
                                    "from": sender,
                                    "id": wamid,
                                    "timestamp": str(int(time.time())),
                                    "type": "text",
                                    "text": {"body": text},
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode()


def ensure_demo_connection(settings: Settings) -> DemoStack:
    """The demo company with a Meta connection for the sample's phone number id, as ``zapq dev seed`` makes it
    (created once; its token the fake Meta's, so ``./dev up`` sends through it)."""
    db = Database.from_url(settings.sqlalchemy_url, pool_size=1)
    try:
        with db.session() as session:
            company_id, connection_id, created = demo_store.ensure_connection(
                session,
                company_name=DEMO_COMPANY_NAME,
                phone_number_id=DEMO_PHONE_NUMBER_ID,
                display_number=DEMO_DISPLAY_NUMBER,
                access_token=Secrets(settings.secrets_key_list).encrypt(FAKE_META_TOKEN),
            )
            return DemoStack(company_id=company_id, connection_id=connection_id, created=created)
    finally:
        db.close()


def run_demo(settings: Settings, *, keep_running: bool = False, timeout: float = 60.0) -> int:
    """Drive one webhook through the whole system and print what happened; 0 on success."""
    print(f"1/5 migrating {settings.sqlalchemy_url.rsplit('@', 1)[-1]}")
    upgrade(settings.sqlalchemy_url, secrets_keys=settings.secrets_key_list)
    stack = ensure_demo_connection(settings)

    port = free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="zapq-demo-"))
    group = ProcessGroup(log_dir=log_dir)
    print(f"2/5 starting webhook-ingest API on 127.0.0.1:{port} and workers (logs in {log_dir})")
    with group.running():
        api = group.start(
            "webhook-ingest-api",
            [
                "-m",
                "uvicorn",
                "services.webhook_ingest.app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
            ],
        )
        group.start("webhook-ingest-worker", ["-m", "dramatiq", "services.webhook_ingest", "-p", "1", "-t", "4"])
        group.start("ops-worker", ["-m", "dramatiq", "services.scheduler", "-p", "1", "-t", "2"])
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz", process=api)

        challenge = uuid.uuid4().hex
        answer = httpx.get(
            f"{base}/webhooks/meta",
            params={
                "hub.mode": "subscribe",
                "hub.verify_token": settings.meta_verify_token,
                "hub.challenge": challenge,
            },
        )
        print(
            f"3/5 Meta verification handshake: HTTP {answer.status_code}, challenge echoed: {answer.text == challenge}"
        )

        wamid = f"wamid.DEMO{uuid.uuid4().hex.upper()}"
        body = sample_webhook(wamid)
        response = httpx.post(
            f"{base}/webhooks/meta",
            content=body,
            headers={
                "content-type": "application/json",
                "x-hub-signature-256": sign_meta(body, settings.meta_app_secret),
            },
        )
        print(f"4/5 signed webhook POSTed: HTTP {response.status_code} {response.text}")
        if response.status_code != 200:
            return 1
        webhook_id = response.json()["id"]

        db = Database.from_url(settings.sqlalchemy_url, pool_size=1)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with db.session() as session:
                    outcome = demo_store.webhook_outcome(
                        session, webhook_id, phone_number_id=DEMO_PHONE_NUMBER_ID, wamid=wamid
                    )
                if outcome is not None:
                    print(
                        f"5/5 webhook {webhook_id} is {outcome.status.value} "
                        f"({outcome.item_count} item(s)); inbound message stored: "
                        f"{'yes, id ' + str(outcome.message_id) if outcome.message_id else 'no'}"
                    )
                    if keep_running:
                        print("processes keep running; Ctrl-C to stop")
                        _wait_forever()
                    print("\nNext: `./dev up` starts the whole system with this demo company; then:")
                    print(next_steps(settings, stack))
                    return 0 if outcome.status == WebhookStatus.PROCESSED else 1
                time.sleep(0.2)
        finally:
            db.close()
        print(f"webhook {webhook_id} was not processed within {timeout} s; see the logs in {log_dir}")
        return 1


def _wait_forever() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
