"""sync.replication.overlay: the replica's view is the confirmed policy with its edits replayed."""

from __future__ import annotations

import copy
from typing import Any

from sync.policy.document import export_policy, parse_policy
from sync.policy.engine import Engine
from sync.policy.instant import parse_instant
from sync.policy.request import parse_request
from sync.replication.overlay import LocalEdit, Overlay, decide_in_view

NOW = parse_instant("2026-12-01T08:00:00Z")

DOCUMENT: dict[str, Any] = {
    "format": "fleetgate.policy/1",
    "tenant": "acme",
    "resource_types": {"vehicle": ["read", "drive"]},
    "roles": [
        {"id": "r-driver", "name": "driver",
         "grants": [{"resource": "vehicle", "actions": ["drive"]}]},
        {"id": "r-viewer", "name": "viewer",
         "grants": [{"resource": "vehicle", "actions": ["read"]}]},
        {"id": "r-night", "name": "night", "inherits": ["driver"]},
    ],
    "users": [
        {"id": "ana", "roles": [{"role": "viewer"}]},
        {"id": "ben", "roles": [{"role": "night"}]},
        {"id": "cy"},
    ],
}  # fmt: skip


def engine() -> Engine:
    return Engine(parse_policy(copy.deepcopy(DOCUMENT), now=NOW), 4)


def drive(user: str) -> Any:
    return parse_request({"user": user, "action": "drive", "resource": {"type": "vehicle"}})


def test_without_edits_the_view_is_the_confirmed_policy() -> None:
    decisions, relied, failed = decide_in_view(engine(), [], [drive("ana")], NOW)
    assert not decisions[0].allowed and relied == [()] and failed == {}


def test_a_decision_that_relies_on_a_pending_edit_names_it() -> None:
    edits = [
        LocalEdit(3, {"op": "assign_role", "user_id": "ana", "role_id": "r-driver"}, NOW),
        LocalEdit(4, {"op": "rename_role", "role_id": "r-viewer", "name": "looker"}, NOW),
        LocalEdit(5, {"op": "assign_role", "user_id": "cy", "role_id": "r-viewer"}, NOW),
    ]
    requests = [drive("ana"), drive("ben"), drive("cy")]
    decisions, relied, failed = decide_in_view(engine(), edits, requests, NOW)
    assert [d.allowed for d in decisions] == [True, True, False]
    # ana's allow comes from edit 3 (a rename changes no one's access).
    assert relied[0] == (3,)
    # ben is not touched; cy is touched, but her decision is what it was.
    assert relied[1] == () and relied[2] == ()
    assert failed == {}


def test_an_edit_that_no_longer_applies_is_left_out_with_its_reason() -> None:
    edits = [
        LocalEdit(7, {"op": "assign_role", "user_id": "ana", "role_id": "r-gone"}, NOW),
        LocalEdit(8, {"op": "assign_role", "user_id": "ana", "role_id": "r-driver"}, NOW),
    ]
    decisions, relied, failed = decide_in_view(engine(), edits, [drive("ana")], NOW)
    assert decisions[0].allowed and relied == [(8,)]
    assert set(failed) == {7} and "r-gone" in failed[7]


def test_taking_the_overlay_back_restores_the_confirmed_policy() -> None:
    compiled = engine()
    before = export_policy(compiled.policy)
    edits = [
        LocalEdit(1, {"op": "delete_role", "role_id": "r-driver"}, NOW),
        LocalEdit(2, {"op": "suspend_user", "user_id": "ana"}, NOW),
    ]
    overlay = Overlay(compiled, edits)
    assert not compiled.decide(drive("ben"), NOW).allowed
    overlay.take_back()
    assert export_policy(compiled.policy) == before
    assert compiled.decide(drive("ben"), NOW).allowed
    # ben held driver through night: he is affected, though the view no longer says so.
    assert {"ana", "ben"} <= overlay.affected


def test_a_deleted_roles_holder_relies_on_the_deletion() -> None:
    edits = [
        LocalEdit(1, {"op": "delete_role", "role_id": "r-driver"}, NOW),
        LocalEdit(2, {"op": "suspend_user", "user_id": "ana"}, NOW),
    ]
    decisions, relied, _ = decide_in_view(engine(), edits, [drive("ben")], NOW)
    assert not decisions[0].allowed and relied == [(1,)]
