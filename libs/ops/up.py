"""``zapq dev up`` (``./dev up``): every process of ``deploy/Procfile.dev`` under a small supervisor of zapq's own.

It migrates, starts each process in its own session (so Ctrl-C reaches only the supervisor), prefixes their
output with their names, seeds the demo company and connection through the API (:mod:`libs.ops.seed`) and
prints the next-steps block. On Ctrl-C or SIGTERM it sends SIGTERM to each process — a Dramatiq worker then
finishes its in-flight jobs, uvicorn its requests — waits up to ``grace`` seconds for all of them, removes the
stack's stale heartbeat files and exits 0 (1 when a process had to be killed or died on its own).
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from libs.heartbeat import prune
from libs.ops.processes import ROOT, ProcessGroup, wait_http
from libs.ops.seed import SeedError, next_steps, seed_demo
from libs.settings import Settings

PROCFILE = ROOT / "deploy" / "Procfile.dev"
#: Seconds the processes get to drain after SIGTERM (the longest a dev send or webhook job takes, and more).
DEFAULT_GRACE = 60.0


@dataclass(frozen=True)
class ProcessSpec:
    """One line of a Procfile: a name and a shell command (``${VAR:-default}`` expanded by the shell)."""

    name: str
    command: str


def read_procfile(path: Path = PROCFILE) -> list[ProcessSpec]:
    """The processes of a Procfile (``name: command`` lines; ``#`` comments and blank lines skipped)."""
    specs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, command = line.partition(":")
        if not sep or not name.strip() or not command.strip():
            raise ValueError(f"{path}:{number}: expected 'name: command', got {line!r}")
        specs.append(ProcessSpec(name.strip(), command.strip()))
    return specs


class Supervisor:
    """Runs :class:`ProcessSpec` s until :meth:`request_stop` (a signal) or one of them exits, then stops all."""

    def __init__(self, specs: list[ProcessSpec], *, env: dict[str, str] | None = None, out: IO[str] | None = None):
        self.specs = specs
        self.group = ProcessGroup(env=env)
        self.out = out or sys.stdout
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pumps: list[threading.Thread] = []
        self.width = max((len(s.name) for s in specs), default=0)

    def say(self, text: str, name: str = "zapq") -> None:
        """One prefixed line per line of ``text``."""
        with self._lock:
            for line in text.splitlines() or [""]:
                self.out.write(f"{name.rjust(self.width)} | {line}\n")
            self.out.flush()

    def start(self) -> None:
        """Start every process (``exec`` through bash, so the process itself gets the signals)."""
        for spec in self.specs:
            process = self.group.spawn(spec.name, ["bash", "-c", f"exec {spec.command}"], stdout=subprocess.PIPE)
            pump = threading.Thread(target=self._pump, args=(spec.name, process), name=f"out-{spec.name}", daemon=True)
            pump.start()
            self._pumps.append(pump)

    def _pump(self, name: str, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            self.say(raw.decode(errors="replace").rstrip("\n"), name)
        # Its output ended: it is exiting. Reap it first, so that whoever wakes up sees it exited (and its code).
        process.wait()
        self._stop.set()  # stop the others too

    def exited(self) -> list[tuple[str, int]]:
        """The processes that have exited, with their codes."""
        return [(name, p.returncode) for name, p in self.group.children if p.poll() is not None]

    def request_stop(self, *_: object) -> None:
        """Stop soon (signal-handler safe)."""
        self._stop.set()

    def wait(self, poll: float = 0.5) -> list[tuple[str, int]]:
        """Block until a stop is requested or a process exits; the processes that exited on their own."""
        while not self._stop.wait(poll):
            if self.exited():
                break
        return self.exited()

    def stop(self, grace: float) -> int:
        """SIGTERM each process, wait up to ``grace`` s for all, SIGKILL the rest; 0 when none was killed."""
        self.say(f"stopping {len(self.group.children)} processes (SIGTERM, waiting up to {grace:.0f} s for them)")
        codes = self.group.stop(grace=grace)
        for pump in self._pumps:
            pump.join(timeout=5)
        killed = self.group.killed
        self.say("stopped: " + ", ".join(f"{name} {_ended(code, name in killed)}" for name, code in codes.items()))
        return 1 if killed else 0


def _ended(code: int | None, killed: bool) -> str:
    if killed:
        return "killed"
    return "ok" if code in (0, -signal.SIGTERM) else f"exit {code}"  # uvicorn re-raises the SIGTERM it handled


def _seed_and_tell(settings: Settings, supervisor: Supervisor, api_url: str) -> None:
    headers = {"authorization": f"Bearer {settings.api_token}"}
    try:
        wait_http(f"{api_url}/healthz", timeout=60)
        with httpx.Client(base_url=api_url, headers=headers, timeout=10) as http:
            stack = seed_demo(http)
    except (SeedError, TimeoutError, RuntimeError) as exc:
        supervisor.say(f"could not seed the demo company ({exc}); the processes keep running")
        supervisor.say(next_steps(settings, None, api_url=api_url))
        return
    made = "created" if stack.created else "found"
    supervisor.say(f"demo company {stack.company_id} and connection {stack.connection_id} {made}; zapq is up:")
    supervisor.say(next_steps(settings, stack, api_url=api_url))


def run_up(
    settings: Settings,
    *,
    specs: list[ProcessSpec] | None = None,
    grace: float = DEFAULT_GRACE,
    migrate: Callable[[str], None] | None = None,
    out: IO[str] | None = None,
) -> int:
    """Migrate, start every process, seed, print the block; on Ctrl-C / SIGTERM stop them all cleanly."""
    from libs.db.migrate import upgrade

    supervisor = Supervisor(specs if specs is not None else read_procfile(), out=out)
    supervisor.say(f"migrating {settings.sqlalchemy_url.rsplit('@', 1)[-1]}")
    (migrate or upgrade)(settings.sqlalchemy_url)
    prune(settings.stack_heartbeat_dir)
    previous = {sig: signal.signal(sig, supervisor.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        supervisor.start()
        supervisor.say(", ".join(shlex.quote(s.name) for s in supervisor.specs) + " started; Ctrl-C stops them all")
        seeding = threading.Thread(
            target=_seed_and_tell, args=(settings, supervisor, settings.api_url.rstrip("/")), daemon=True
        )
        seeding.start()
        died = supervisor.wait()
        if died:
            supervisor.say("exited on its own: " + ", ".join(f"{name} (code {rc})" for name, rc in died))
            code = 1
    finally:
        code = max(code, supervisor.stop(grace))
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        removed = prune(settings.stack_heartbeat_dir)
        supervisor.say(f"removed {len(removed)} stale heartbeat file(s); exit {code}")
    return code
