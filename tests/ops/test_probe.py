"""Container probes: a real worker process keeps its heartbeat fresh; a killed one fails the probe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from libs import heartbeat
from libs.ops import probe
from libs.ops.processes import ROOT, ProcessGroup
from libs.settings import Settings


def test_check_reports_missing_fresh_and_stale(tmp_path: Path) -> None:
    directory = str(tmp_path)
    assert probe.check(directory, "worker", 30)[0] is False
    probe.touch(directory, "worker")
    assert probe.check(directory, "worker", 30) == (True, "1 worker process(es) alive")
    healthy, reason = probe.check(directory, "worker", 30, now=time.time() + 60)
    assert not healthy and "silent for" in reason


def test_heartbeat_of_a_dead_process_is_ignored(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    probe.heartbeat_file(str(tmp_path), "worker", int(dead.stdout)).touch()
    healthy, reason = probe.check(str(tmp_path), "worker", 30)
    assert not healthy and "no running worker" in reason


@pytest.mark.timeout(90)
def test_real_worker_passes_probe_until_killed(tmp_path: Path, settings: Settings, migrated: str) -> None:
    env = {"ZAPQ_HEARTBEAT_DIR": str(tmp_path)}
    stack = tmp_path / settings.redis_namespace  # each stack (namespace) keeps its own heartbeats
    group = ProcessGroup(env=env)
    with group.running():
        worker = group.start("worker", ["-m", "dramatiq", "services.campaign_runner", "-p", "1", "-t", "1"])
        deadline = time.monotonic() + 45
        while not list(stack.glob("zapq-worker-*.alive")) and time.monotonic() < deadline:
            assert worker.poll() is None, "the worker exited"
            time.sleep(0.2)  # waiting for an external process to boot, bounded
        cli = [sys.executable, "-m", "libs.ops.probe", "worker"]
        ok = subprocess.run(cli, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True)
        assert ok.returncode == 0, ok.stderr
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    failed = subprocess.run(cli, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True)
    assert failed.returncode == 1
    assert "no running worker" in failed.stderr


def test_probe_counts_only_its_own_stacks_heartbeats(tmp_path: Path) -> None:
    # Given a live process's heartbeat in another stack's directory only
    other = Settings(heartbeat_dir=str(tmp_path), redis_namespace="other-stack")
    mine = Settings(heartbeat_dir=str(tmp_path), redis_namespace="my-stack")
    probe.touch(other.stack_heartbeat_dir, "worker")
    # Then this stack's probe does not count it, the other stack's does
    assert probe.check(mine.stack_heartbeat_dir, "worker", 30)[0] is False
    assert probe.check(other.stack_heartbeat_dir, "worker", 30)[0] is True


def test_prune_removes_only_heartbeats_of_gone_processes(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = heartbeat.heartbeat_file(str(tmp_path), "worker", int(dead.stdout))
    stale.touch()
    probe.touch(str(tmp_path), "worker")  # this process: alive
    assert heartbeat.prune(str(tmp_path)) == [stale]
    assert [p.name for p in tmp_path.iterdir()] == [f"zapq-worker-{os.getpid()}.alive"]


def test_a_process_removes_its_heartbeat_when_it_exits(tmp_path: Path) -> None:
    code = (
        "import sys; from libs.heartbeat import start_heartbeat, heartbeat_file;"
        "start_heartbeat(sys.argv[1], 'scheduler', interval=0.05);"
        "import time; deadline = time.monotonic() + 10\n"
        "while not heartbeat_file(sys.argv[1], 'scheduler').exists() and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "print(heartbeat_file(sys.argv[1], 'scheduler').exists())"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.strip() == "True", done.stderr  # it wrote one while running
    assert list(tmp_path.glob("zapq-*.alive")) == []  # and removed it on exit
