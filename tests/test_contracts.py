"""Every cross-service contract of ``libs.contracts`` has exactly one consuming actor, in exactly one service,
on the contract's queue, taking exactly the payload's fields.

Contracts are found generically (every :class:`~libs.contracts.Contract` in the module, also inside its tables),
and each service package under ``services/`` is imported in a subprocess of its own, as its process would import
it, so an actor is seen where it is really declared.
"""

from __future__ import annotations

import dataclasses
import json
import pkgutil
import subprocess
import sys
from typing import Any

import pytest

from libs import contracts
from libs.ops.processes import ROOT

#: Prints, for the service package given as argv[1], its broker's actors: name, queue and parameters.
DESCRIBE_ACTORS = """
import importlib, inspect, json, sys
import dramatiq.broker
importlib.import_module(sys.argv[1])
broker = dramatiq.broker.global_broker
actors = {}
for name in sorted(broker.get_declared_actors()) if broker is not None else []:
    actor = broker.get_actor(name)
    parameters = inspect.signature(actor.fn).parameters.values()
    actors[name] = {
        "queue": actor.queue_name,
        "parameters": [[p.name, p.kind.name, str(p.annotation)] for p in parameters],
    }
print(json.dumps(actors))
"""


def all_contracts() -> list[contracts.Contract[Any]]:
    """Every contract defined in ``libs.contracts``: module attributes and the values of its dicts and tuples."""
    found: dict[int, contracts.Contract[Any]] = {}
    for value in vars(contracts).values():
        candidates = value.values() if isinstance(value, dict) else value if isinstance(value, tuple) else [value]
        for candidate in candidates:
            if isinstance(candidate, contracts.Contract):
                found[id(candidate)] = candidate
    return sorted(found.values(), key=lambda c: c.actor_name)


def service_modules() -> list[str]:
    """Every service package: ``services.<name>``."""
    return sorted(f"services.{m.name}" for m in pkgutil.iter_modules([str(ROOT / "services")]) if m.ispkg)


@pytest.fixture(scope="module")
def declared() -> dict[str, dict[str, Any]]:
    """Per service module, the actors its process declares (each module imported alone, in a subprocess)."""
    out: dict[str, dict[str, Any]] = {}
    for module in service_modules():
        run = subprocess.run(
            [sys.executable, "-c", DESCRIBE_ACTORS, module], cwd=ROOT, capture_output=True, text=True, check=True
        )
        out[module] = json.loads(run.stdout.strip().splitlines()[-1])
    return out


def test_the_contracts_and_services_are_found() -> None:
    assert {c.actor_name for c in all_contracts()} >= {"process_webhook", "send_message", "record_dead_letter"}
    assert {"services.message_sender", "services.scheduler"} <= set(service_modules())


@pytest.mark.parametrize("contract", all_contracts(), ids=lambda c: c.actor_name)
def test_each_contract_has_one_consumer_with_its_queue_and_the_payload_fields(
    contract: contracts.Contract[Any], declared: dict[str, dict[str, Any]]
) -> None:
    # Given where each service declares its actors
    consumers = [
        (module, actors[contract.actor_name]) for module, actors in declared.items() if contract.actor_name in actors
    ]
    # Then exactly one service declares the contract's actor
    assert [module for module, _ in consumers] != [], f"no service consumes {contract.actor_name}"
    assert len(consumers) == 1, f"{contract.actor_name} is declared in {[m for m, _ in consumers]}"
    [(_, actor)] = consumers
    # And it listens on the contract's queue
    assert actor["queue"] == contract.queue_name
    # And it takes exactly the payload's fields, by name, with their types (no *args, no **kwargs)
    fields = [[f.name, "POSITIONAL_OR_KEYWORD", str(f.type)] for f in dataclasses.fields(contract.payload)]
    assert actor["parameters"] == fields
