"""``zapq dev up``'s supervisor, its failure paths: a process that outlives the grace after SIGTERM is killed
(exit 1); a process that dies stops the others, which are stopped (exit 1). The clean path — Ctrl-C, every
real process drained, exit 0, no heartbeat left — is ``tests/cli/test_first_hour.py``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from libs.ops.processes import ROOT, free_port
from libs.ops.up import ProcessSpec, read_procfile
from libs.settings import Settings

#: A process that says it is up, and on SIGTERM "drains" (a short pause) and exits 0.
DRAINS = (
    f"{sys.executable} -c 'import signal, sys, time; "
    'signal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.3), print("drained", flush=True), sys.exit(0))); '
    'print("up", flush=True); time.sleep(60)\''
)
#: A process that ignores SIGTERM.
STUBBORN = (
    f"{sys.executable} -c 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    'print("up", flush=True); time.sleep(60)\''
)


def test_the_procfile_is_read_and_a_bad_line_named(tmp_path: Path) -> None:
    specs = read_procfile()
    assert {"api", "webhook-api", "message-sender", "scheduler", "fake-meta"} <= {s.name for s in specs}
    bad = tmp_path / "Procfile"
    bad.write_text("# comment\n\nok: true\nno command here\n")
    with pytest.raises(ValueError, match=r"Procfile:4: expected 'name: command'"):
        read_procfile(bad)


def _up(tmp_path: Path, lines: list[ProcessSpec], grace: float, settings: Settings) -> subprocess.Popen[str]:
    procfile = tmp_path / "Procfile"
    procfile.write_text("".join(f"{s.name}: {s.command}\n" for s in lines))
    env = {
        **os.environ,
        "ZAPQ_API_URL": f"http://127.0.0.1:{free_port()}",  # nothing there: seeding says so, the processes run on
        "ZAPQ_HEARTBEAT_DIR": str(tmp_path / "heartbeats"),
    }
    argv = [sys.executable, "-m", "libs.cli", "dev", "up", "--procfile", str(procfile), "--grace", str(grace)]
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _run(process: subprocess.Popen[str], *until: str) -> tuple[int, str]:
    """Wait for every line of ``until`` in the output, then Ctrl-C; the exit code and all the output."""
    lines: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if all(part in "".join(lines) for part in until):
            break
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=30)
    return process.returncode, "".join(lines) + rest


@pytest.mark.timeout(60)
def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_and_the_exit_is_1(
    tmp_path: Path, settings: Settings, migrated: str
) -> None:
    process = _up(tmp_path, [ProcessSpec("good", DRAINS), ProcessSpec("stubborn", STUBBORN)], 1, settings)
    code, out = _run(process, "good | up", "stubborn | up")
    assert code == 1, out
    assert "stopped: good ok, stubborn killed" in out and "exit 1" in out, out
    assert "drained" in out  # the other one still got its SIGTERM and drained


@pytest.mark.timeout(60)
def test_a_process_that_dies_stops_the_others_with_exit_1(tmp_path: Path, settings: Settings, migrated: str) -> None:
    process = _up(tmp_path, [ProcessSpec("good", DRAINS), ProcessSpec("broken", "sh -c 'exit 3'")], 10, settings)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 1, out
    assert "exited on its own: broken (code 3)" in out and "stopped: good ok, broken exit 3" in out, out
