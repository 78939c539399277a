"""No secret and no full phone number in any output: the demo's, and the edge's as it is deployed.

Every ZAPQ_* secret is set to a distinctive value; a connection with a distinctive provider access token
exists. The demo (``python -m libs.cli demo``) runs the real processes; its output and every log file of
its children are searched. The edge is then run as the deployment runs it (uvicorn with access logs) and
sent the Meta handshake (the verify token travels in the query string) and signed webhooks.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from libs.db.engine import Database
from libs.ops.processes import ROOT, free_port, wait_http
from libs.settings import Settings
from tests.faults.support import Group, make_connection, signed_webhook

TAG = uuid.uuid4().hex[:8]
SECRETS = {
    "ZAPQ_META_APP_SECRET": f"app-secret-{TAG}",
    "ZAPQ_META_VERIFY_TOKEN": f"verify-token-{TAG}",
    "ZAPQ_API_TOKEN": f"api-token-{TAG}",
    "ZAPQ_BAILEYS_WEBHOOK_SECRET": f"baileys-secret-{TAG}",
}
ACCESS_TOKEN = f"EAAprovidertoken{TAG}"
#: The demo's and the sample webhook's numbers: the customer and the business display number.
PHONES = ("16505551234", "15550783881")


def leaks(text: str) -> list[str]:
    """Every secret or full phone number found in ``text`` (digits compared without separators)."""
    found = [name for name, value in SECRETS.items() if value in text]
    found += ["provider access token"] * (ACCESS_TOKEN in text)
    digits = re.sub(r"[\s+()\-]", "", text)
    found += [phone for phone in PHONES if phone in digits]
    return found


def run_demo(env: dict[str, str], *, timeout: float) -> tuple[int | None, str]:
    """Run ``python -m libs.cli demo``; its exit code and all its output.

    Bounded: past ``timeout`` the demo gets SIGINT (its ``finally`` stops the processes it started), then
    SIGKILL for it and everything it started.
    """
    demo = subprocess.Popen(
        [sys.executable, "-m", "libs.cli", "demo"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = demo.communicate(timeout=timeout)
        return demo.returncode, output
    except subprocess.TimeoutExpired:
        demo.send_signal(signal.SIGINT)
        try:
            output, _ = demo.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            children = subprocess.run(["pgrep", "-P", str(demo.pid)], capture_output=True, text=True).stdout.split()
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(pid), signal.SIGKILL)
            demo.kill()
            output, _ = demo.communicate()
        return None, output


@pytest.mark.faults
@pytest.mark.timeout(150)
def test_demo_output_and_logs_hold_no_secret_nor_phone_number(settings: Settings, db: Database) -> None:
    make_connection(db, token=ACCESS_TOKEN)  # the demo's number: its inbound message is stored
    env = {**os.environ, **SECRETS, "PYTHONUNBUFFERED": "1"}
    returncode, output = run_demo(env, timeout=90)
    match = re.search(r"logs in (\S+?)\)", output)
    assert match, output
    log_dir = Path(match.group(1))
    try:
        logs = {path.name: path.read_text(errors="replace") for path in sorted(log_dir.glob("*"))}
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    assert returncode == 0, output
    assert "challenge echoed: True" in output and "is processed" in output, output
    assert len(logs) == 3, sorted(logs)
    found = {"demo output": leaks(output), **{name: leaks(text) for name, text in logs.items()}}
    assert not any(found.values()), found
    print(f"\nSecrets: demo output + {len(logs)} child logs ({sum(map(len, logs.values()))} chars): no leak")


@pytest.mark.faults
@pytest.mark.timeout(60)
def test_edge_with_access_logs_leaks_no_secret(settings: Settings, db: Database, groups: Callable[..., Group]) -> None:
    # Given the edge run as deployed: uvicorn with its access log
    group = groups(**SECRETS)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    edge = group.start("edge", ["-m", "uvicorn", "services.webhook_ingest.app:app", "--host", "127.0.0.1",
                                "--port", str(port)])  # fmt: skip
    wait_http(f"{base}/healthz", process=edge)
    # When Meta verifies the endpoint, someone guesses the token, and signed webhooks arrive
    with httpx.Client(timeout=10) as client:
        token = SECRETS["ZAPQ_META_VERIFY_TOKEN"]
        params = {"hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": "7"}
        ok = client.get(f"{base}/webhooks/meta", params=params)
        assert ok.status_code == 200
        for _ in range(3):
            _, body, headers = signed_webhook(SECRETS["ZAPQ_META_APP_SECRET"])
            assert client.post(f"{base}/webhooks/meta", content=body, headers=headers).status_code == 200
        baileys = {"x-zapq-secret": SECRETS["ZAPQ_BAILEYS_WEBHOOK_SECRET"]}
        assert client.post(f"{base}/webhooks/baileys", content=b'{"event":"x"}', headers=baileys).status_code == 200
    group.stop(grace=10)
    # Then its log shows the requests but neither the verify token nor anything else secret
    text = "".join(path.read_text(errors="replace") for path in group.path.glob("edge-*.log"))
    assert "GET /webhooks/meta" in text, text
    assert not leaks(text), (leaks(text), text)
