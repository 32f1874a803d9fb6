"""Fixtures the desktop app's tests share: a real encrypted replica of a small fleet
tenant (keyring mode, the in-memory keyring) and a `Workspace` on it as its admin.

    from tests.app.ui_fixtures import (  # noqa: F401
        cheap_argon2, memory_keyring, ui_replica, workspace)

The tenant is `tests/app/test_client_cli.py`'s POLICY (admin `boss`, `sam` with
an eligible `driver`, `vic` a viewer) plus a night-dispatcher role with a
condition, a role inheriting another, and 40 more users, so lists, holders
through inheritance and conditions all have something to show.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest

from app.replica import Replica
from app.ui.workspace import Workspace
from sync.policy.document import parse_policy
from sync.policy.instant import parse_instant
from sync.replication.digest import digest_of
from sync.replication.entities import policy_entities
from tests.app.test_client_cli import POLICY, SYNCED, cheap_argon2, memory_keyring

__all__ = ["SCREENSHOTS", "cheap_argon2", "fill_replica", "memory_keyring", "ui_policy",
           "ui_replica", "workspace"]  # fmt: skip

SCREENSHOTS = Path(__file__).resolve().parents[2] / "screenshots"
"""Where GUI tests save what each view looks like (the README names it)."""


def ui_policy() -> dict[str, Any]:
    document: dict[str, Any] = copy.deepcopy(POLICY)
    document["resource_types"]["vehicle"] = ["read", "drive", "refuel"]
    document["roles"] += [
        {
            "id": "r-night",
            "name": "night-dispatcher",
            "description": "Dispatches the night shift in the north",
            "inherits": ["viewer"],
            "grants": [
                {
                    "resource": "vehicle",
                    "actions": ["drive"],
                    "when": {"all": [
                        {"resource.region": "$user.region"},
                        {"context.hour": {"gte": 20}},
                    ]},
                }
            ],
            "denies": [{"resource": "vehicle", "actions": ["refuel"]}],
        },
        {"id": "r-senior", "name": "senior-dispatcher", "inherits": ["night-dispatcher"]},
    ]  # fmt: skip
    document["users"] += [
        {
            "id": f"u{i:03}",
            "name": f"Person {i}",
            "attributes": {"region": ("north", "south")[i % 2], "depot": f"d{i % 5}"},
            "roles": [{"role": ("viewer", "night-dispatcher", "senior-dispatcher")[i % 3]}],
        }
        for i in range(40)
    ]
    return document


def fill_replica(
    directory: Path, document: dict[str, Any], user: str = "boss", **keying: Any
) -> Replica:
    """A replica in `directory` holding `document`, as a snapshot at version 7 fills it;
    `keying`: Replica.open's `mode` and `passphrase` (default: keyring mode)."""
    entities = list(policy_entities(parse_policy(document, now=parse_instant(SYNCED))))
    opened = Replica.open(directory, document["tenant"], user, create=True, **keying)
    opened.replace_all(7, entities, digest_of(entities))
    return opened


@pytest.fixture
def ui_replica(tmp_path: Path) -> Iterator[Replica]:
    opened = fill_replica(tmp_path, ui_policy())
    yield opened
    opened.close()


@pytest.fixture
def workspace(ui_replica: Replica) -> Workspace:
    return Workspace(ui_replica, "boss")
