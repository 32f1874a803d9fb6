"""app.replica: what the replica's search finds, the history of changes it keeps, and
its schema migrations."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from app import replica as replica_module
from app.replica import MIGRATIONS, HistoryEntry, Replica, fts_query
from app.replica_file import ReplicaFile
from sync.policy.document import parse_policy
from sync.policy.instant import parse_instant
from sync.protocol.messages import Change
from sync.replication.digest import digest_of
from sync.replication.entities import ROLE, Entity, policy_entities
from tests.app.test_client_cli import POLICY, cheap_argon2, memory_keyring  # noqa: F401

NOW = parse_instant("2026-12-01T08:00:00Z")


def _entities() -> list[Any]:
    document = copy.deepcopy(POLICY)
    document["roles"].append(
        {"id": "r-yard", "name": "yard", "denies": [{"resource": "vehicle", "actions": ["drive"]}]}
    )
    document["users"].append(
        {
            "id": "kim",
            "name": "Kim Osei",
            "attributes": {"shifts": ["early", "weekend"], "depot": "north-01"},
        }
    )
    return list(policy_entities(parse_policy(document, now=NOW)))  # fmt: skip


def test_search_finds_list_attribute_values_and_deny_rules_by_their_words(tmp_path: Path) -> None:
    entities = _entities()
    replica = Replica.open(tmp_path, "acme", "boss", create=True)
    try:
        replica.replace_all(7, entities, digest_of(entities))
        assert ("user", "kim") in replica.search("weekend")  # one value of a list attribute
        assert ("user", "kim") in replica.search("north-01")
        assert ("role", "r-yard") in replica.search("deny vehicle")
        assert replica.search("denie") == []  # the word written out, not a cut "denies"
    finally:
        replica.close()


def test_a_one_letter_word_beside_longer_ones_does_not_widen_the_search(tmp_path: Path) -> None:
    entities = _entities()
    replica = Replica.open(tmp_path, "acme", "boss", create=True)
    try:
        replica.replace_all(7, entities, digest_of(entities))
        # "r-yard": the r would match every row with a word starting in r.
        assert replica.search("r-yard") == [("role", "r-yard")]
        assert ("user", "kim") in replica.search("k")  # alone, it is still a prefix
    finally:
        replica.close()


def test_entities_matching_every_word_whole_come_before_those_matching_a_prefix(
    tmp_path: Path,
) -> None:
    document = copy.deepcopy(POLICY)
    document["users"] = [
        {"id": f"u{i}", "name": name}
        for i, name in enumerate(["Samantha Obi", "Sam Obi", "Samuel Sam", "Obi Sampson"])
    ]
    entities = list(policy_entities(parse_policy(document, now=NOW)))  # fmt: skip
    replica = Replica.open(tmp_path, "acme", "boss", create=True)
    try:
        replica.replace_all(7, entities, digest_of(entities))
        found = replica.search("sam obi")
        assert found == [("user", "u1"), ("user", "u0"), ("user", "u3")]
        assert replica.search("sam obi", limit=1) == [("user", "u1")]
    finally:
        replica.close()


def _replica_of_schema(directory: Path, version: int) -> Replica:
    """A new replica as a client of schema `version` made it."""
    file = ReplicaFile.open(directory, "acme", "boss", migrations=MIGRATIONS[:version],
                            create=True)  # fmt: skip
    return Replica(file)


def test_migration_2_indexes_again_what_a_replica_of_schema_1_held(tmp_path: Path) -> None:
    entities = _entities()
    old = _replica_of_schema(tmp_path, 1)
    try:
        with old.file.write():
            # As the client of schema 1 wrote a snapshot: the text kept in the index.
            old._set_meta(tenant="acme", user="boss", device="d-1", cursor=7)
            for rowid, e in enumerate(entities, 1):
                old.file.conn.execute(
                    "INSERT INTO entities (rowid, kind, id, document) VALUES (?, ?, ?, ?)",
                    (rowid, e.kind, e.id, json.dumps(e.document)),
                )
                old.file.conn.execute(
                    "INSERT INTO entity_text (rowid, kind, text) VALUES (?, ?, ?)",
                    (rowid, e.kind, e.id),
                )
        assert old.file.schema_version() == 1
    finally:
        old.close()
    replica = Replica.open(tmp_path, "acme", "boss")
    try:
        assert replica.file.schema_version() == len(MIGRATIONS)
        assert ("user", "kim") in replica.search("weekend")
        assert ("role", "r-yard") in replica.search("yard")
        # The index keeps no copy of the text: its content table is gone.
        tables = {name for (name,) in replica.file.conn.execute(
            "SELECT name FROM sqlite_master WHERE name LIKE 'entity_text%'")}  # fmt: skip
        assert "entity_text_content" not in tables
    finally:
        replica.close()


RENAME = {"op": "rename_role", "role_id": "r-yard", "name": "yard chief"}


def _renamed(entities: list[Any]) -> Entity:
    (yard,) = [e for e in entities if e.kind == ROLE and e.id == "r-yard"]
    return Entity(ROLE, "r-yard", dict(yard.document) | {"name": "yard chief"})


def test_a_page_of_changes_keeps_who_made_each_from_where_and_when(tmp_path: Path) -> None:
    entities = _entities()
    change = Change(8, RENAME, "ann", "d-ann", "c-ann", 3, "2026-12-01T09:00:00Z")
    replica = Replica.open(tmp_path, "acme", "boss", create=True)
    try:
        replica.replace_all(7, entities, digest_of(entities))
        assert replica.change(7) is None  # a snapshot brings no history
        replica.apply_changes(8, [_renamed(entities)], 99, [change])
        assert replica.change(8) == HistoryEntry(8, "ann", "d-ann", "c-ann", 3,
                                                 "2026-12-01T09:00:00Z", RENAME)  # fmt: skip
        # The same change again (a page repeated after a reconnect) is kept once.
        replica.apply_changes(8, [], 99, [change])
        assert replica.query("SELECT count(*) FROM changes") == [(1,)]
        assert replica.query(
            "SELECT rowid FROM change_text WHERE change_text MATCH ?", ('"yard"* "ann"*',)
        ) == [(8,)]
        assert replica.query(
            "SELECT rowid FROM change_text WHERE change_text MATCH ?", (fts_query("d-ann"),)
        ) == [(8,)]
    finally:
        replica.close()


def test_a_page_that_fails_to_write_leaves_no_history_of_it(tmp_path: Path) -> None:
    entities = _entities()
    replica = Replica.open(tmp_path, "acme", "boss", create=True)
    try:
        replica.replace_all(7, entities, digest_of(entities))
        change = Change(8, RENAME, "ann", "d-ann", "c-ann", 3, "2026-12-01T09:00:00Z")
        # A document that cannot be written as JSON text stops the page mid-way.
        unwritable = Entity(ROLE, "r-yard", {"name": object()})
        with pytest.raises(TypeError):
            replica.apply_changes(8, [unwritable], 99, [change])
        assert replica.change(8) is None
        assert replica.meta().cursor == 7
    finally:
        replica.close()


def test_migration_3_adds_an_empty_history_to_a_replica_of_schema_2(tmp_path: Path) -> None:
    entities = _entities()
    old = _replica_of_schema(tmp_path, 2)
    try:
        with old.file.write():
            old._set_meta(tenant="acme", user="boss", device="d-1", cursor=0)
        old.replace_all(7, entities, digest_of(entities))
        assert old.file.schema_version() == 2
    finally:
        old.close()
    replica = Replica.open(tmp_path, "acme", "boss")
    try:
        assert replica.file.schema_version() == 3
        assert replica.query("SELECT count(*) FROM changes") == [(0,)]
        change = Change(8, RENAME, "ann", "d-ann", "c-ann", 3, "2026-12-01T09:00:00Z")
        replica.apply_changes(8, [_renamed(entities)], 99, [change])
        assert replica.change(8) is not None
        assert ("role", "r-yard") in replica.search("chief")
    finally:
        replica.close()


def test_the_history_keeps_the_last_changes_and_forgets_older_ones_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replica_module, "HISTORY_KEPT", 2)
    entities = _entities()
    replica = Replica.open(tmp_path, "acme", "boss", create=True)
    try:
        replica.replace_all(7, entities, digest_of(entities))
        for version, name in ((8, "first-name"), (9, "second-name"), (10, "third-name")):
            edit = {"op": "rename_role", "role_id": "r-yard", "name": name}
            change = Change(version, edit, "ann", "d-ann", "c-ann", version, "2026-12-01T09:00:00Z")
            replica.apply_changes(version, [], 99, [change])
        assert [v for (v,) in replica.query("SELECT version FROM changes")] == [9, 10]
        assert replica.change(8) is None
        # Its search row went with it.
        assert replica.query("SELECT rowid FROM change_text WHERE change_text MATCH ?",
                             (fts_query("first"),)) == []  # fmt: skip
        assert replica.query("SELECT rowid FROM change_text WHERE change_text MATCH ?",
                             (fts_query("third"),)) == [(10,)]  # fmt: skip
    finally:
        replica.close()
