"""End to end: a sync server and two headless clients, run as `fleetgate` processes.

A edits offline while B edits the same role online; A comes back; both converge,
A sees the conflict with both values, and A's stale grant after B's revoke is
superseded (the client issue, § Proof).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.headless import Headless
from tests.server.conftest import ACME_POLICY, add_account, make_tenant


@pytest.fixture
async def acme(migrated: str) -> int:
    tenant_id = await make_tenant(migrated, "acme", document=ACME_POLICY)
    await add_account(migrated, tenant_id, "ann")
    return tenant_id


READ = {"resource": "vehicle", "actions": ["read"]}


async def test_an_offline_edit_meets_an_online_one_and_both_replicas_converge(
    server: Any, acme: int, tmp_path: Path
) -> None:
    a = Headless(server.port, tmp_path / "laptop-a", "admin")
    b = Headless(server.port, tmp_path / "desk-b", "ann")
    for person in (a, b):
        code, _, err = await person.sync()
        assert code == 0, err
        assert "replica key: derived from a passphrase" in err

    # A, offline: renames driver and gives it back a grant it already has.
    code, _, err = await a.edit(
        [{"op": "rename_role", "role_id": "r-driver", "name": "chauffeur"},
         {"op": "add_rule", "owner": "role:r-driver", "effect": "deny",
          "rule": {"resource": "vehicle", "actions": ["dispatch"]}}],
        tmp_path,
    )  # fmt: skip
    assert code == 0, err
    # B, online: renames driver otherwise and revokes its read grant.
    code, _, err = await b.edit(
        [{"op": "rename_role", "role_id": "r-driver", "name": "motorist"},
         {"op": "remove_rule", "owner": "role:r-driver", "effect": "grant", "rule": READ}],
        tmp_path,
    )  # fmt: skip
    assert code == 0, err
    code, out, err = await b.sync()
    assert code == 0, err
    assert out.count("applied as version") == 2

    # A, still offline, re-grants what B revoked: a stale grant.
    code, _, err = await a.edit(
        [{"op": "add_rule", "owner": "role:r-driver", "effect": "grant", "rule": READ}], tmp_path
    )
    assert code == 0, err
    pending = await a.outbox()
    assert [row["state"] for row in pending["pending"]] == ["pending"] * 3

    code, out, err = await a.sync()
    assert code == 0, err
    outbox = await a.outbox()
    assert outbox["pending"] == []
    seen = {row["seq"]: row for row in outbox["outcomes"]}
    rename, regrant = sorted(seen)
    conflict = seen[rename]
    assert conflict["outcome"] == "conflict"
    assert conflict["conflict"]["server"] == "motorist"
    assert conflict["conflict"]["client"] == "chauffeur"
    assert seen[regrant]["code"] == "superseded", seen
    # Who set the value the server keeps, from where and when: B's change, as A received it.
    met = conflict["met"]
    assert met is not None and met["author"] == "ann" and met["version"] == conflict["version"]
    assert met["at"].endswith("Z") and met["device"]
    assert seen[regrant]["met"]["author"] == "ann"
    replica = a.open()
    try:
        change = replica.change(conflict["version"])
        assert change is not None
        assert change.edit == {"op": "rename_role", "role_id": "r-driver", "name": "motorist"}
    finally:
        replica.close()
    code, out, _err = await a.outbox_text()
    assert code == 0 and f"version {met['version']} by ann (device " in out, out
    # The deny between them (a narrowing) was merged: nothing for A to look at.

    code, _, err = await b.sync()
    assert code == 0, err
    # Both replicas now hold the same policy as the server.
    for person in (a, b):
        decision = await person.check("--user", "admin", "--action", "read",
                                      "--resource", "vehicle:v-1")  # fmt: skip
        assert decision["lease"] == "fresh"
    a_state, b_state = await a.outbox(), await b.outbox()
    assert a_state["cursor"] == b_state["cursor"] == 5
    assert a_state["digest"] == b_state["digest"] == await server_digest(server, acme)


async def server_digest(server: Any, tenant_id: int) -> str:
    tenant = await server.tenants.current(tenant_id)
    return f"{tenant.digest:064x}"
