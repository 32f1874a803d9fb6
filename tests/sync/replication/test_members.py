"""sync.replication.members: an edit's effect as member changes, classified for the
merge rules, and the stamps that record them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.policy.model import Rule, rule_key
from sync.replication.entities import Entity
from sync.replication.members import (
    ABSENT,
    TOUCHED,
    ChangeKind,
    MemberChange,
    Stamp,
    entity_members,
    is_touch,
    member_changes,
    member_from_text,
    member_label,
    member_text,
    policy_changes,
    stamp_changes,
    touches,
)

READ = {"resource": "doc", "actions": ["read"]}
KEY = rule_key(Rule.build("doc", ("read",)))


def kinds(before: Any, after: Any, kind: str = "user") -> dict[tuple[str, ...], ChangeKind]:
    return {c.member: c.kind for c in member_changes(kind, "x", before, after)}


@pytest.mark.parametrize(
    ("before", "after", "member", "kind"),
    [
        ({"id": "x"}, {"id": "x", "roles": [{"role_id": "r"}]}, ("role", "r"), "widening"),
        ({"id": "x", "roles": [{"role_id": "r"}]}, {"id": "x"}, ("role", "r"), "narrowing"),
        ({"id": "x", "roles": [{"role_id": "r", "expires": "2027-01-01T00:00:00Z"}]},
         {"id": "x", "roles": [{"role_id": "r", "expires": "2026-12-01T00:00:00Z"}]},
         ("role", "r"), "narrowing"),
        ({"id": "x", "roles": [{"role_id": "r", "expires": "2026-12-01T00:00:00Z"}]},
         {"id": "x", "roles": [{"role_id": "r"}]}, ("role", "r"), "widening"),
        ({"id": "x"}, {"id": "x", "denies": [READ]}, ("deny", KEY), "narrowing"),
        ({"id": "x", "denies": [READ]}, {"id": "x"}, ("deny", KEY), "widening"),
        ({"id": "x"}, {"id": "x", "grants": [READ]}, ("grant", KEY), "widening"),
        ({"id": "x"}, {"id": "x", "suspended": True}, ("suspended",), "narrowing"),
        ({"id": "x", "suspended": True}, {"id": "x"}, ("suspended",), "widening"),
        ({"id": "x", "attributes": {"a": 1}}, {"id": "x", "attributes": {"a": 2}},
         ("attribute", "a"), "scalar"),
        ({"id": "x", "roles": [{"role_id": "r", "eligible": {"max_hours": 8}}]},
         {"id": "x", "roles": [{"role_id": "r", "eligible": {"max_hours": 4}}]},
         ("eligible", "r"), "narrowing"),
        ({"id": "x", "roles": [{"role_id": "r", "eligible": {"max_hours": 4}}]},
         {"id": "x", "roles": [{"role_id": "r", "eligible": {"max_hours": 8}}]},
         ("eligible", "r"), "widening"),
    ],
)  # fmt: skip
def test_each_user_member_change_is_classified_by_the_merge_rules(
    before: Any, after: Any, member: tuple[str, ...], kind: str
) -> None:
    assert kinds(before, after) == {("user", "x", *member): ChangeKind(kind)}


def test_role_members_names_descriptions_and_inheritance() -> None:
    before = {"id": "x", "name": "a", "inherits": ["p"]}
    after = {"id": "x", "name": "b", "description": "d", "inherits": ["q"]}
    assert kinds(before, after, "role") == {
        ("role", "x", "name"): ChangeKind.SCALAR,
        ("role", "x", "description"): ChangeKind.SCALAR,
        ("role", "x", "inherits", "q"): ChangeKind.WIDENING,
        ("role", "x", "inherits", "p"): ChangeKind.NARROWING,
    }


def test_creating_and_deleting_an_entity_is_one_change_of_its_existence() -> None:
    assert member_changes("user", "x", None, {"id": "x", "grants": [READ]}) == [
        MemberChange(("user", "x"), ChangeKind.WIDENING, ABSENT, True)
    ]
    assert member_changes("role", "x", {"id": "x", "name": "a"}, None) == [
        MemberChange(("role", "x"), ChangeKind.NARROWING, True, ABSENT)
    ]


def test_a_value_of_another_type_is_a_change_even_when_python_calls_it_equal() -> None:
    assert kinds({"id": "x", "attributes": {"a": 1}}, {"id": "x", "attributes": {"a": True}})


def test_a_damaged_document_gives_what_can_be_read_and_never_raises() -> None:
    damaged = {"id": "x", "attributes": "x", "roles": [5, {"role_id": ["r"]}], "grants": "g"}
    assert entity_members("user", "x", damaged) == {("user", "x", "name"): None}
    assert entity_members("role", "x", 5) == {}
    assert kinds(damaged, {"id": "x", "roles": [{"role_id": "r", "expires": "soon"}]})


def test_members_round_trip_through_their_stored_text() -> None:
    member = ("user", 'a\x1fb"c', "attribute", "k:é")
    assert member_from_text(member_text(member)) == member
    assert member_label(("role", "r-1", "name")) == "role r-1 name"
    assert member_label(("user", "ann")) == "user ann"


def test_a_stamp_keeps_the_latest_change_by_someone_other_than_the_last_author() -> None:
    member = ("user", "u", "role", "r")
    narrow = [MemberChange(member, ChangeKind.NARROWING, True, ABSENT)]
    widen = [MemberChange(member, ChangeKind.WIDENING, ABSENT, True)]
    stamps: dict[Any, Stamp] = {}
    for version, client, changes in ((11, "c3", narrow), (12, "c1", narrow), (13, "c1", widen)):
        stamps.update(stamp_changes(stamps.get, changes, [], version, client))
    stamp = stamps[member]
    assert stamp == Stamp(13, "c1", 12, "c1", changed_other=11, narrowed_other=11)
    # c1 cannot hide c3's narrowing at 11 by narrowing itself at 12
    assert stamp.narrowed_since(10, "c1") == 11
    assert stamp.narrowed_since(11, "c1") is None
    assert stamp.narrowed_since(10, "c3") == 12
    assert stamp.changed_since(12, "c3") == 13


def test_a_stamp_touches_each_changed_entity() -> None:
    entity = Entity("user", "u", {"id": "u"})
    written = stamp_changes(lambda m: None, [], [entity], 7, "c")
    assert written == {("user", "u", TOUCHED): Stamp(7, "c")}


def test_replacing_a_policy_diffs_every_entity_it_changes() -> None:
    old = [
        Entity("user", "a", {"id": "a", "attributes": {"k": 1}}),
        Entity("user", "b", {"id": "b"}),
    ]
    new = [
        Entity("user", "a", {"id": "a", "attributes": {"k": 2}}),
        Entity("user", "c", {"id": "c"}),
    ]
    changes, touched = policy_changes(old, new)
    assert {c.member: c.kind for c in changes} == {
        ("user", "a", "attribute", "k"): ChangeKind.SCALAR,
        ("user", "b"): ChangeKind.NARROWING,
        ("user", "c"): ChangeKind.WIDENING,
    }
    assert [e.key for e in touched] == ["user:a", "user:b", "user:c"]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["c1", "c2", "c3"]),
            st.lists(
                st.tuples(st.sampled_from(["name", "attr-a", "attr-b", "role-r"]), st.booleans()),
                min_size=1,
                max_size=3,
            ),
        ),
        max_size=12,
    )
)
def test_touches_derived_from_member_stamps_equal_the_ones_pushes_write(
    history: list[tuple[str, list[tuple[str, bool]]]],
) -> None:
    """A store keeps member stamps only; loading derives the touches, which must be
    the very stamps the pushes kept in memory."""
    entity = Entity("user", "u", {"id": "u"})
    stamps: dict[Any, Stamp] = {}
    for version, (client, parts) in enumerate(history, 1):
        changes = [
            MemberChange(
                ("user", "u", part), ChangeKind.NARROWING if narrow else ChangeKind.SCALAR, 1, 2
            )
            for part, narrow in parts
        ]
        stamps.update(stamp_changes(stamps.get, changes, [entity], version, client))
    members = {m: s for m, s in stamps.items() if not is_touch(m)}
    assert touches(members) == {m: s for m, s in stamps.items() if is_touch(m)}
