"""``zapq dlq list|show|replay|purge``: output, exit codes (0 ok, 1 failed, 2 usage, 3 not found), replay.

Run in-process through :func:`libs.cli.main.main` (capsys) against this session's Postgres and Redis, and once
as a real subprocess with the session's environment.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import dramatiq
import pytest
from sqlalchemy import text

from libs import contracts
from libs.cli.main import main
from libs.cli.output import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from libs.db.engine import Database
from libs.deadletters import actions
from tests.helpers import drain, queue_length
from tests.middleware.support import REPO, Probe, ledger_rows, record_entry, subprocess_env


def zapq(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``zapq argv`` in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def seed(db: Database, queue: str = contracts.WEBHOOKS, **kwargs: Any) -> int:
    """Record one dead letter; its id."""
    actions.record(db, record_entry(queue=queue, **kwargs))
    return ledger_rows(db)[-1].id


def age(db: Database, dead_letter_id: int, days: int) -> None:
    """Pretend the row was recorded ``days`` ago."""
    with db.engine.begin() as conn:
        conn.execute(
            text("UPDATE dead_letters SET created_at = now() - make_interval(days => :d) WHERE id = :id"),
            {"d": days, "id": dead_letter_id},
        )


def ids(out: str) -> list[int]:
    """Row ids of a ``--json`` listing."""
    return [row["id"] for row in json.loads(out)]


def test_list_json_newest_first_with_filters(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    # Given two webhooks dead letters (one 3 days old) and a messages one
    old = seed(db)
    webhook = seed(db, error_message="webhook boom")
    message = seed(db, contracts.MESSAGES, actor="test_flaky")
    age(db, old, 3)
    # When listed as JSON
    code, out, _ = zapq(capsys, "dlq", "list", "--json")
    # Then all rows come newest first with their fields
    assert code == EXIT_OK
    rows = json.loads(out)
    assert [r["id"] for r in rows] == [message, webhook, old]
    assert rows[1]["queue"] == contracts.WEBHOOKS
    assert rows[1]["error_message"] == "webhook boom"
    assert rows[1]["state"] == "dead"
    assert rows[1]["replay_count"] == 0
    assert {"actor", "reason", "error_type", "attempts", "first_failed_at", "last_failed_at"} <= rows[1].keys()
    # And --queue, --since and --limit narrow it down
    assert ids(zapq(capsys, "dlq", "list", "--json", "--queue", "webhooks")[1]) == [webhook, old]
    assert ids(zapq(capsys, "dlq", "list", "--json", "--since", "1d")[1]) == [message, webhook]
    assert ids(zapq(capsys, "dlq", "list", "--json", "--limit", "1")[1]) == [message]


def test_list_as_a_table(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    assert zapq(capsys, "dlq", "list") == (EXIT_OK, "(none)\n", "")
    dead_letter_id = seed(db)
    code, out, _ = zapq(capsys, "dlq", "list")
    header, line = out.splitlines()
    assert code == EXIT_OK
    assert header.split() == ["ID", "QUEUE", "ACTOR", "REASON", "ERROR_TYPE", "ATTEMPTS", "STATE", "LAST_FAILED_AT"]
    assert line.split()[:7] == [
        str(dead_letter_id),
        "webhooks",
        "test_scripted",
        "exhausted",
        "libs.errors.TransientError",
        "3",
        "dead",
    ]


def test_show_json_is_the_full_row(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    dead_letter_id = seed(db, kwargs={"key": "k1"})
    code, out, _ = zapq(capsys, "dlq", "show", str(dead_letter_id), "--json")
    assert code == EXIT_OK
    data = json.loads(out)
    assert data["id"] == dead_letter_id
    assert data["kwargs"] == {"key": "k1"}
    assert data["args"] == []
    assert data["options"] == {}
    assert data["traceback"].startswith("Traceback (most recent call last)")


def test_unknown_id_exits_3_with_a_message(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("show", "replay", "purge"):
        code, out, err = zapq(capsys, "dlq", command, "4242")
        assert (code, out) == (EXIT_NOT_FOUND, ""), command
        assert err == "zapq: no dead letter with id 4242\n", command


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["purge", "--older-than", "90x"], "bad duration '90x'"),
        (["purge", "--older-than", "d90"], "bad duration 'd90'"),
        (["purge"], "purge needs an ID or --older-than AGE"),
        (["list", "--since", "last tuesday"], "bad --since 'last tuesday'"),
        (["replay"], "replay needs an ID, --queue Q or --all"),
        (["replay", "--since", "soon", "--all"], "bad --since 'soon'"),
    ],
)
def test_bad_input_exits_2(argv: list[str], message: str, db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = zapq(capsys, "dlq", *argv)
    assert (code, out) == (EXIT_USAGE, "")
    assert err.startswith(f"zapq: {message}")


def test_unparseable_arguments_exit_2() -> None:
    # argparse's own errors (bad type, unknown command) exit 2 through SystemExit
    for argv in (["dlq", "list", "--limit", "many"], ["dlq", "show", "abc"], ["dlq", "explode"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == EXIT_USAGE


def test_unreachable_database_exits_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a database URL nobody listens on
    monkeypatch.setenv("ZAPQ_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    # Then the command fails with exit code 1 and one line on stderr, not a traceback
    code, out, err = zapq(capsys, "dlq", "list")
    assert (code, out) == (EXIT_FAILED, "")
    assert err == "zapq: database unavailable: OperationalError\n"


def test_purge_by_id(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    keep, gone = seed(db), seed(db)
    assert zapq(capsys, "dlq", "purge", str(gone)) == (EXIT_OK, "purged 1\n", "")
    assert [r.id for r in ledger_rows(db)] == [keep]


def test_purge_older_than_90_days(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    # Given rows 91, 89 and 0 days old
    ancient, recent, fresh = seed(db), seed(db), seed(db)
    age(db, ancient, 91)
    age(db, recent, 89)
    # When purging what is older than 90 days
    code, out, _ = zapq(capsys, "dlq", "purge", "--older-than", "90d", "--json")
    # Then only the 91-day-old row is gone
    assert (code, json.loads(out)) == (EXIT_OK, {"purged": 1})
    assert [r.id for r in ledger_rows(db)] == [recent, fresh]


def test_replay_by_id_runs_the_job_once(
    db: Database,
    broker: Any,
    worker: dramatiq.Worker,
    probe: Probe,
    test_actors: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a job dead-lettered after its 2 tries, whose cause has since been fixed
    test_actors["test_flaky"].send("cli-replay")
    drain(broker, worker, [contracts.MESSAGES, contracts.DEAD_LETTER])
    [dead] = ledger_rows(db)
    probe.fixed.add("cli-replay")
    # When `zapq dlq replay ID` runs
    code, out, _ = zapq(capsys, "dlq", "replay", str(dead.id))
    drain(broker, worker, [contracts.MESSAGES, contracts.DEAD_LETTER])
    # Then the job ran again with fresh attempts and succeeded, and the row says replayed once
    assert (code, out) == (EXIT_OK, f"replayed 1: [{dead.id}]\n")
    assert [r.failures for r in probe.attempts["cli-replay"]] == [0, 1, 0]
    shown = json.loads(zapq(capsys, "dlq", "show", str(dead.id), "--json")[1])
    assert (shown["state"], shown["replay_count"]) == ("replayed", 1)
    # And replaying it again enqueues nothing
    code, out, _ = zapq(capsys, "dlq", "replay", str(dead.id))
    assert code == EXIT_OK
    assert out.startswith(f"dead letter {dead.id} was already replayed at ")
    drain(broker, worker, [contracts.MESSAGES])
    assert len(probe.attempts["cli-replay"]) == 3


def test_replay_twice_enqueues_once(db: Database, broker: Any, capsys: pytest.CaptureFixture[str]) -> None:
    dead_letter_id = seed(db, contracts.MESSAGES, actor="test_flaky")
    assert zapq(capsys, "dlq", "replay", str(dead_letter_id))[0] == EXIT_OK
    assert zapq(capsys, "dlq", "replay", str(dead_letter_id))[0] == EXIT_OK
    assert queue_length(broker.client, broker.namespace, contracts.MESSAGES) == 1


def test_replay_dry_run_enqueues_nothing(db: Database, broker: Any, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = seed(db), seed(db)
    code, out, _ = zapq(capsys, "dlq", "replay", "--all", "--dry-run", "--json")
    assert (code, json.loads(out)) == (EXIT_OK, {"replayed": [first, second], "dry_run": True})
    assert zapq(capsys, "dlq", "replay", str(first), "--dry-run") == (EXIT_OK, f"would replay 1: [{first}]\n", "")
    assert queue_length(broker.client, broker.namespace, contracts.WEBHOOKS) == 0
    assert all(r.replayed_at is None for r in ledger_rows(db))


def test_replay_selects_by_queue_then_all(db: Database, broker: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # Given two messages dead letters and one webhooks dead letter
    m1 = seed(db, contracts.MESSAGES, actor="test_flaky")
    w1 = seed(db)
    m2 = seed(db, contracts.MESSAGES, actor="test_flaky")

    def waiting(queue: str) -> int:
        return queue_length(broker.client, broker.namespace, queue)

    # When replaying --queue messages
    assert zapq(capsys, "dlq", "replay", "--queue", "messages") == (EXIT_OK, f"replayed 2: [{m1}, {m2}]\n", "")
    # Then only those two were enqueued
    assert (waiting(contracts.MESSAGES), waiting(contracts.WEBHOOKS)) == (2, 0)
    # When replaying --all
    assert zapq(capsys, "dlq", "replay", "--all") == (EXIT_OK, f"replayed 1: [{w1}]\n", "")
    # Then only the row not yet replayed was enqueued
    assert (waiting(contracts.MESSAGES), waiting(contracts.WEBHOOKS)) == (2, 1)
    assert zapq(capsys, "dlq", "replay", "--all") == (EXIT_OK, "replayed 0: []\n", "")


def test_cli_as_a_real_process(db: Database) -> None:
    # Given one dead letter in this session's database
    dead_letter_id = seed(db, error_message="seen from outside")

    def zapq_process(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "libs.cli", *argv],
            cwd=REPO,
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    # When `zapq dlq list --json` runs as its own process with the session's environment
    listed = zapq_process("dlq", "list", "--json")
    # Then it sees the row, and exit codes reach the shell
    assert listed.returncode == EXIT_OK, listed.stderr
    assert [(r["id"], r["error_message"]) for r in json.loads(listed.stdout)] == [(dead_letter_id, "seen from outside")]
    missing = zapq_process("dlq", "show", "999999")
    assert (missing.returncode, missing.stdout) == (EXIT_NOT_FOUND, "")
    assert "no dead letter with id 999999" in missing.stderr
