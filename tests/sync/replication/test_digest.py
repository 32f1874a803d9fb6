"""sync.replication.digest: one fingerprint of a policy, order-free and updated per change."""

from __future__ import annotations

from sync.replication.digest import digest_of, digest_text, entity_hash, updated
from sync.replication.entities import Entity

A = Entity("user", "a", {"id": "a", "attributes": {"x": 1, "y": 2}})
B = Entity("role", "b", {"id": "b", "name": "b"})


def test_the_digest_does_not_depend_on_order_of_entities_or_keys() -> None:
    reordered = Entity("user", "a", {"attributes": {"y": 2, "x": 1}, "id": "a"})
    assert digest_of([A, B]) == digest_of([B, reordered])


def test_an_update_gives_the_digest_of_the_new_policy() -> None:
    changed = Entity("user", "a", {"id": "a", "attributes": {"x": 5}})
    gone = Entity("role", "b", None)
    assert updated(digest_of([A, B]), [A, B], [changed, gone]) == digest_of([changed])


def test_the_digest_is_64_hex_digits_and_the_empty_policy_is_zero() -> None:
    assert digest_text(digest_of([])) == "0" * 64
    assert len(digest_text(digest_of([A]))) == 64
    assert entity_hash("user", "a", None) == 0


def test_a_value_of_another_type_changes_the_digest() -> None:
    one = Entity("user", "a", {"id": "a", "attributes": {"x": 1}})
    true = Entity("user", "a", {"id": "a", "attributes": {"x": True}})
    big = Entity("user", "a", {"id": "a", "attributes": {"x": 2**70}})  # beyond orjson
    assert len({digest_of([one]), digest_of([true]), digest_of([big])}) == 3
