"""``zapq campaign …``: the whole life of a campaign from the command line, against the real API.

The API is served by uvicorn on a free port in a thread, on this session's database and Redis namespace
(``tests/cli/conftest.py``); the CLI runs in-process and talks to it over HTTP, as it would in production.
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from libs.cli.campaign import UploadProgress, render_status
from libs.cli.output import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from libs.ops.processes import free_port
from tests.cli.conftest import zapq


def create(capsys: pytest.CaptureFixture[str], company: dict[str, Any], *extra: str) -> int:
    """A draft text campaign made with ``zapq campaign create``; its id."""
    ids = ["--company", str(company["id"]), "--connection", str(company["connection"]["id"])]
    code, out, err = zapq(capsys, "campaign", "create", *ids, "--name", "Black Friday", *extra)
    assert code == EXIT_OK, err
    return int(out)


def write_csv(path: Path, rows: int) -> Path:
    """``rows`` distinct valid recipients with a name column."""
    with path.open("w") as f:
        f.write("phone,name\n")
        f.writelines(f"+1 415 {i:07d},Name {i}\n" for i in range(rows))
    return path


def test_a_campaign_from_create_to_cancel(
    capsys: pytest.CaptureFixture[str], company: dict[str, Any], tmp_path: Path
) -> None:
    # Given a draft campaign and a CSV with a duplicate and a bad phone
    cid = create(capsys, company, "--text", "Hi {name}")
    csv = tmp_path / "recipients.csv"
    csv.write_text("phone,name\n+1 (415) 555-0001,Ana\n14155550002,Bruno\n14155550001,Ana again\nnope,Zed\n")
    # When it is imported
    code, out, err = zapq(capsys, "campaign", "import", str(cid), str(csv))
    # Then the server's summary is printed: two inserted, one duplicate, one rejected with its reason
    assert code == EXIT_OK, err
    assert "rows 4  inserted 2  duplicates 1  rejected 1" in out
    assert "row 4: a phone number needs 7 to 15 digits" in out
    assert f"campaign {cid} now has 2 recipients" in out

    # When it is started, it runs with its two recipients
    assert zapq(capsys, "campaign", "start", str(cid))[:2] == (EXIT_OK, f"campaign {cid}: running\n")
    code, out, _ = zapq(capsys, "campaign", "status", str(cid), "--json")
    status = json.loads(out)
    assert code == EXIT_OK and (status["status"], status["recipients_count"]) == ("running", 2)

    # And pause, resume and cancel print each new status
    for action, state in (("pause", "paused"), ("resume", "running"), ("cancel", "cancelled")):
        assert zapq(capsys, "campaign", action, str(cid)) == (EXIT_OK, f"campaign {cid}: {state}\n", "")
    code, out, _ = zapq(capsys, "campaign", "status", str(cid))
    assert code == EXIT_OK
    assert out.splitlines() == [
        f"campaign {cid} 'Black Friday': cancelled",
        "now: no messages yet",
        "totals: recipients 2  queued 0  sent 0  delivered 0  read 0  failed 0",
        "[------------------------------]   0.0%",
    ]


def test_a_large_file_is_streamed_in_chunks(
    capsys: pytest.CaptureFixture[str], company: dict[str, Any], tmp_path: Path, http: httpx.Client
) -> None:
    # Given a 20,000-row file (≈ 0.5 MB, several 64 KiB chunks)
    cid = create(capsys, company, "--text", "Hi {name}")
    csv = write_csv(tmp_path / "big.csv", 20_000)
    # When imported with stderr not a terminal
    code, out, err = zapq(capsys, "campaign", "import", str(cid), str(csv), "--json")
    # Then progress was reported as the chunks went out (one line per quarter), not once at the end
    assert code == EXIT_OK, err
    percents = [int(line.split("]")[1].split("%")[0]) for line in err.splitlines()]
    assert len(percents) == 4 and percents == sorted(percents) and percents[0] < 50 and percents[-1] == 100
    assert all(line.startswith("import: [") and line.endswith(("MB", "rows/s")) for line in err.splitlines())
    # And every row reached the server
    summary = json.loads(out)
    assert (summary["rows"], summary["inserted"], summary["rejected"]) == (20_000, 20_000, 0)
    assert http.get(f"/api/campaigns/{cid}").json()["recipients_count"] == 20_000


def test_stdin_is_imported_without_a_size(
    capsys: pytest.CaptureFixture[str], company: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a CSV piped to stdin
    cid = create(capsys, company, "--text", "Hi")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"phone\n14155550001\n14155550002\n")))
    # When imported from '-'
    code, out, err = zapq(capsys, "campaign", "import", str(cid), "-")
    # Then both rows are in, with no percentage lines (the size is unknown)
    assert code == EXIT_OK, err
    assert "inserted 2" in out and err == ""


def test_a_template_campaign_and_the_list(capsys: pytest.CaptureFixture[str], company: dict[str, Any]) -> None:
    # Given a template campaign created with its language and variables
    ids = ["--company", str(company["id"]), "--connection", str(company["connection"]["id"])]
    argv = ["campaign", "create", *ids, "--name", "Promo", "--template", "promo", "--language", "pt_BR"]
    code, out, _ = zapq(capsys, *argv, "--variable", "name", "--variable", "discount", "--json")
    created = json.loads(out)
    assert code == EXIT_OK and created["content_type"] == "template"
    assert created["template"]["language"] == "pt_BR" and created["template"]["variables"] == ["name", "discount"]
    # When listed
    code, out, _ = zapq(capsys, "campaign", "list", "--limit", "5")
    # Then it shows with its status and progress
    assert code == EXIT_OK
    assert out.splitlines()[0].split() == ["ID", "NAME", "STATUS", "RECIPIENTS_COUNT", "SENT_COUNT", "FAILED_COUNT",
                                           "PROGRESS"]  # fmt: skip
    assert out.splitlines()[1].split() == [str(created["id"]), "Promo", "draft", "0", "0", "0", "0.0%"]


def test_unknown_campaigns_exit_3_with_the_api_reason(
    capsys: pytest.CaptureFixture[str], api_url: str, tmp_path: Path
) -> None:
    csv = write_csv(tmp_path / "r.csv", 1)
    for argv in (["status", "999"], ["pause", "999"], ["start", "999"], ["import", "999", str(csv)]):
        code, out, err = zapq(capsys, "campaign", *argv)
        assert (code, out) == (EXIT_NOT_FOUND, ""), argv
        assert err == "zapq: no campaign 999 (HTTP 404)\n"


def test_refused_transitions_and_bad_input_exit_2_with_the_api_reason(
    capsys: pytest.CaptureFixture[str], company: dict[str, Any], tmp_path: Path
) -> None:
    cid = create(capsys, company, "--text", "Hi")
    # A draft cannot be paused (409), nor started without recipients (409)
    assert zapq(capsys, "campaign", "pause", str(cid)) == (
        EXIT_USAGE, "", f"zapq: campaign {cid} is draft: cannot pause (HTTP 409)\n"
    )  # fmt: skip
    code, _, err = zapq(capsys, "campaign", "start", str(cid))
    assert code == EXIT_USAGE and "has no recipients" in err
    # A CSV without a phone column (400), a bad start time and a bad placeholder (422), a bad --limit (400)
    (tmp_path / "no-phone.csv").write_text("name\nAna\n")
    code, _, err = zapq(capsys, "campaign", "import", str(cid), str(tmp_path / "no-phone.csv"))
    assert code == EXIT_USAGE and "'phone' column" in err
    code, _, err = zapq(capsys, "campaign", "start", str(cid), "--at", "soon")
    assert code == EXIT_USAGE and "start_at" in err and "(HTTP 422)" in err
    code, _, err = zapq(capsys, "campaign", "list", "--limit", "0")
    assert code == EXIT_USAGE and "limit must be an integer from 1 to 500" in err
    ids = ["--company", str(company["id"]), "--connection", str(company["connection"]["id"])]
    code, _, err = zapq(capsys, "campaign", "create", *ids, "--name", "x", "--text", "Hi {0}")
    assert code == EXIT_USAGE and "placeholder" in err
    # And the CLI's own checks: a missing file, --variable without --template
    code, _, err = zapq(capsys, "campaign", "import", str(cid), str(tmp_path / "missing.csv"))
    assert code == EXIT_USAGE and "cannot read" in err
    code, _, err = zapq(capsys, "campaign", "create", *ids, "--name", "x", "--text", "Hi", "--variable", "a")
    assert code == EXIT_USAGE and "--variable go with --template" in err


def test_a_wrong_token_exits_1(
    capsys: pytest.CaptureFixture[str], api_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZAPQ_API_TOKEN", "not-the-token")
    code, _, err = zapq(capsys, "campaign", "list")
    assert code == EXIT_FAILED
    assert err == "zapq: missing or invalid bearer token; the CLI sends ZAPQ_API_TOKEN (HTTP 401)\n"


def test_an_api_that_is_down_exits_1_naming_the_url(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for argv in (["--api-url", url, "status", "1"], ["status", "1", "--api-url", url]):
        code, out, err = zapq(capsys, "campaign", *argv)
        assert (code, out) == (EXIT_FAILED, "")
        assert f"cannot reach the zapq API at {url}" in err


def test_watch_returns_at_once_for_a_cancelled_campaign(
    capsys: pytest.CaptureFixture[str], company: dict[str, Any]
) -> None:
    # Given a cancelled campaign
    cid = create(capsys, company, "--text", "Hi")
    assert zapq(capsys, "campaign", "cancel", str(cid))[0] == EXIT_OK
    # When watched (a long interval: only a final status ends the watch this fast)
    started = time.monotonic()
    code, out, _ = zapq(capsys, "campaign", "status", str(cid), "--watch", "--interval", "30")
    # Then one screen is printed and the watch ends with 0
    assert code == EXIT_OK and time.monotonic() - started < 5
    assert (
        out.startswith(f"campaign {cid} 'Black Friday': cancelled  now: no messages yet  totals: recipients 0")
        and out.count("\n") == 1
    )
    # And with --json: one JSON line per poll
    code, out, _ = zapq(capsys, "campaign", "status", str(cid), "--watch", "--json", "--interval", "30")
    assert code == EXIT_OK and [json.loads(line)["status"] for line in out.splitlines()] == ["cancelled"]


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_the_progress_bar_is_redrawn_in_place_on_a_terminal() -> None:
    # Given a terminal, a 1,000-byte upload and a clock moving 1 s per read
    ticks = iter(range(100))
    terminal = Terminal()
    # When two chunks of 500 bytes (one line each) are sent
    with UploadProgress(terminal, 1000, clock=lambda: float(next(ticks))) as progress:
        for _ in range(2):
            progress.advance(b"x" * 99 + b"\n" + b"y" * 400)
    # Then one line is redrawn with \r, ending at 100% with a rate, then a newline
    frames = terminal.getvalue().split("\r")[1:]
    assert len(frames) >= 3 and terminal.getvalue().endswith("\n")
    assert frames[0].startswith("[" + "#" * 15 + "-" * 15 + "]  50%  0.5 kB / 1.0 kB")
    assert frames[-1].startswith("[" + "#" * 30 + "] 100%") and "rows/s" in frames[-1]


def test_status_shows_sends_waiting_for_tier_budget_and_a_quality_pause() -> None:
    # Given a campaign paused by a quality flag, with sends waiting for tier budget (as the API answers it)
    campaign = {
        "id": 7, "name": "Promo", "status": "paused", "status_reason": "Meta quality rating RED", "progress": 0.5,
        "now": {"sent": 1000, "queued": 500}, "recipients_count": 1500, "queued_count": 1500, "sent_count": 1000,
        "delivered_count": 0, "read_count": 0, "failed_count": 0, "suppressed_count": 0,
        "budget": {"state": "waiting for tier budget", "waiting": 500, "frees_at": "2026-12-08T02:00:00Z"},
    }  # fmt: skip
    # When it is rendered
    text = render_status({name: value for name, value in campaign.items()})
    # Then both show
    assert "paused (Meta quality rating RED)" in text
    assert "waiting for tier budget: 500 send(s), room from 2026-12-08T02:00:00Z" in text


def test_a_media_campaign_from_the_command_line(capsys: pytest.CaptureFixture[str], company: dict[str, Any]) -> None:
    # When a document campaign is created with its caption and file name
    cid = create(
        capsys, company, "--media", "document=https://x.io/c.pdf", "--filename", "c.pdf", "--text", "Hi {name}"
    )
    # Then it keeps the medium and the caption
    code, out, _ = zapq(capsys, "campaign", "status", str(cid), "--json")
    shown = json.loads(out)
    assert code == EXIT_OK and (shown["content_type"], shown["body"]) == ("document", "Hi {name}")
    assert shown["content"] == {"link": "https://x.io/c.pdf", "filename": "c.pdf"}
    # And bad combinations exit 2 before any request
    ids = ["--company", str(company["id"]), "--connection", str(company["connection"]["id"]), "--name", "x"]
    for argv, reason in [
        (["--media", "gif=https://x.io/a.gif"], "KIND=URL|MEDIA_ID"),
        (["--media", "image=https://x.io/a.jpg", "--template", "t"], "not --template"),
        (["--text", "x", "--filename", "a.pdf"], "--filename goes with"),
        ([], "give --text, --template or --media"),
    ]:
        code, _, err = zapq(capsys, "campaign", "create", *ids, *argv)
        assert code == EXIT_USAGE and reason in err, err
