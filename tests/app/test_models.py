"""app.ui.models: roles and users read from a real replica a page at a time, and filtered."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
from PySide6.QtCore import QModelIndex, Qt

from app.replica import Replica
from app.ui.models import PAGE, ROLE_COLUMNS, USER_COLUMNS, EntityListModel
from sync.policy.document import parse_policy
from sync.policy.instant import parse_instant
from sync.replication.digest import digest_of
from sync.replication.entities import Entity, policy_entities
from tests.app.test_client_cli import POLICY, cheap_argon2, memory_keyring  # noqa: F401

USERS = 1_000


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[Replica]:
    document: dict[str, Any] = copy.deepcopy(POLICY)
    document["users"] += [
        {"id": f"u{i:05}", "name": f"Person {i}", "attributes": {"depot": f"d{i % 7}"},
         "roles": [{"role": "viewer"}]}
        for i in range(USERS)
    ]  # fmt: skip
    entities = list(
        policy_entities(parse_policy(document, now=parse_instant("2026-12-01T08:00:00Z")))
    )
    opened = Replica.open(tmp_path, "acme", "boss", create=True)
    opened.replace_all(7, entities, digest_of(entities))
    yield opened
    opened.close()


def cell(model: EntityListModel, row: int, column: int) -> Any:
    return model.data(model.index(row, column), Qt.ItemDataRole.DisplayRole)


def test_users_are_read_a_page_at_a_time_as_the_view_asks(replica: Replica) -> None:
    model = EntityListModel(replica, "user", USER_COLUMNS)
    assert model.total == USERS + 3 and model.rowCount() == 0 and model.canFetchMore()
    model.fetchMore()
    assert model.rowCount() == PAGE
    while model.canFetchMore():
        model.fetchMore()
    assert model.rowCount() == USERS + 3
    assert [cell(model, 0, c) for c in range(5)] == ["boss", "", "active", "1", ""]
    assert cell(model, 3, 1) == "Person 0" and cell(model, 3, 4) == "depot: d0"
    assert model.data(model.index(3, 0), EntityListModel.ID_ROLE) == "u00000"


def test_every_column_has_a_header_for_the_table_and_for_screen_readers(replica: Replica) -> None:
    for model in (EntityListModel(replica, "user", USER_COLUMNS),
                  EntityListModel(replica, "role", ROLE_COLUMNS)):  # fmt: skip
        for role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.AccessibleTextRole):
            headers = [model.headerData(c, Qt.Orientation.Horizontal, role)
                       for c in range(model.columnCount())]  # fmt: skip
            assert all(isinstance(h, str) and h for h in headers)


def test_a_filter_shows_what_search_finds_and_clearing_it_pages_again(replica: Replica) -> None:
    model = EntityListModel(replica, "user", USER_COLUMNS)
    model.fetchMore()
    assert model.set_filter("Person 12") >= 1
    ids = [model.entity_id(r) for r in range(model.rowCount())]
    assert ids[0] == "u00012" and not model.canFetchMore()  # the whole word first
    assert model.set_filter("") == PAGE and model.canFetchMore()
    assert model.set_filter("no such person anywhere") == 0 and model.rowCount() == 0


def test_roles_list_every_role_and_a_refresh_sees_a_new_one(replica: Replica) -> None:
    model = EntityListModel(replica, "role", ROLE_COLUMNS)
    model.fetchMore()
    assert [cell(model, r, 0) for r in range(model.rowCount())] == [
        "tenant-admin", "driver", "viewer", "clerk"]  # fmt: skip
    assert model.rowCount(model.index(0, 0)) == 0  # a table: no children
    entities = [*replica.entities(), Entity("role", "r-new", {"id": "r-new", "name": "yard"})]
    replica.replace_all(8, entities, digest_of(entities))
    model.refresh()
    assert model.total == 5 and cell(model, 4, 0) == "yard"
    assert model.data(QModelIndex()) is None
