"""Fixtures for the policy core tests: the example tenant of policy-format.md,
a fixed clock, and small builders for requests and engines.

Helpers are handed out as fixtures (not imported from here) so that test
modules stay importable on their own.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sync.policy.decision import Decision
from sync.policy.document import parse_policy
from sync.policy.engine import Engine
from sync.policy.instant import parse_instant
from sync.policy.model import Policy
from sync.policy.request import Request, parse_request

NOW = parse_instant("2026-11-22T09:30:00Z")

# The example document of policy-format.md § Policy document, verbatim (kept
# in tests/data), plus a few users that the tests below need.
EXAMPLE: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "policy-format-example.json").read_text()
)
EXAMPLE["users"] += [
    {"id": "bob", "attributes": {"region": "south"}, "roles": [{"role": "viewer"}]},
    {"id": "carol", "roles": [{"role": "payment-creator"}]},
    {"id": "dave"},
]


def minimal_document(**parts: Any) -> dict[str, Any]:
    """A valid document with one type (`doc`: read, write) and whatever `parts` add."""
    document: dict[str, Any] = {
        "format": "fleetgate.policy/1",
        "tenant": "t",
        "resource_types": {"doc": ["read", "write"]},
    }
    document.update(parts)
    return document


def make_request(
    user: str,
    action: str,
    resource_type: str,
    *,
    resource_id: Any = None,
    attributes: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
) -> Request:
    """A request built through `parse_request`, as the command line builds it."""
    resource: dict[str, Any] = {"type": resource_type}
    if resource_id is not None:
        resource["id"] = resource_id
    if attributes is not None:
        resource["attributes"] = attributes
    document: dict[str, Any] = {"user": user, "action": action, "resource": resource}
    if context is not None:
        document["context"] = context
    return parse_request(document)


def policy_state(policy: Policy) -> dict[str, Any]:
    """Everything a policy holds, comparable with ==."""
    return {
        "tenant": policy.tenant,
        "resource_types": dict(policy.resource_types),
        "roles": dict(policy.roles),
        "users": dict(policy.users),
        "constraints": policy.constraints,
    }


@pytest.fixture
def example_doc() -> dict[str, Any]:
    """A fresh copy of the example document: tests may change it."""
    return copy.deepcopy(EXAMPLE)


@pytest.fixture
def example_policy(example_doc: dict[str, Any]) -> Policy:
    return parse_policy(example_doc, now=NOW)


@pytest.fixture
def example_engine(example_policy: Policy) -> Engine:
    return Engine(example_policy)


@pytest.fixture
def minimal() -> Callable[..., dict[str, Any]]:
    return minimal_document


@pytest.fixture
def decide() -> Callable[..., Decision]:
    """`decide(engine_or_document, user, action, type, *, resource_id, attributes, context)`."""

    def run(
        target: Engine | dict[str, Any],
        user: str,
        action: str,
        resource_type: str,
        *,
        resource_id: Any = None,
        attributes: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
    ) -> Decision:
        engine = target if isinstance(target, Engine) else Engine(parse_policy(target, now=NOW))
        request = make_request(
            user,
            action,
            resource_type,
            resource_id=resource_id,
            attributes=attributes,
            context=context,
        )
        return engine.decide(request, NOW)

    return run


@pytest.fixture
def state() -> Callable[[Policy], dict[str, Any]]:
    return policy_state
