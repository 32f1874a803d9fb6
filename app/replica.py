"""The client's local replica: what its tables hold and how they change.

Rules of this module (the client issue, § The replica):

- One encrypted file per tenant and user (`app/replica_file.py` keeps the
  key, the lock and the damage checks); every table is inside it.
- `entities` holds the confirmed policy: the server's, at `cursor`. A
  snapshot or a page of changes is written with the cursor and digest in the
  same transaction, so no reader ever sees half a batch.
- `outbox` holds the replica's own edits, each with the client id, a seq
  that only grows, the base version it was made against, its document and
  times. Writing an edit *is* its optimistic effect: the replica's view is
  the confirmed policy with the outbox replayed over it
  (`sync/replication/overlay.py`), so the two cannot disagree. A row leaves
  the outbox only with an outcome: applied and merged ones once the cursor
  reaches their version, rejected and conflicting ones into `outcomes`,
  which a person must see and dismiss.
- `decisions` is the device's offline decision chain; links are deleted
  only up to what the server confirmed (`through`).
- `meta` holds single values (cursor, digest, lease, clock mark, the
  session's ids and token expiry); the refresh and access tokens are secrets
  (the keyring, or the replica itself in passphrase mode).
- FTS5 indexes roles, users and their rules (`entity_text`), the outbox
  (`outbox_text`) and the decision log (`decision_text`). A search is words,
  each a prefix; `entity_text` keeps neither the text (rows are read from
  `entities`) nor positions, so it has no relevance score: entities matching
  every word whole come first, then those matching by prefix, in policy order.
  Decisions are indexed when a search first needs them, not when they are
  logged: a batch's log is then only its rows.
- `changes` is the policy's history as this replica received it: each change
  of a page (version, author, device, client, seq, server time, edit), written
  in the page's transaction, indexed for search (`change_text`, by version).
  It answers who made the version an edit met, and when (a conflict's other
  side), and is the audit trail a person reads offline. A snapshot brings no
  history: what came before a replica's first snapshot (or a resnapshot over a
  compacted stretch) is the server's audit log's alone. The last HISTORY_KEPT
  changes are kept: older ones leave in the page that pushes them out.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from app.replica_file import KeyMode, Migration, ReplicaFile, rescued_rows, salvage
from sync.policy.document import holds_unstorable
from sync.policy.edits import EDIT_TYPES
from sync.policy.instant import Instant, format_instant, parse_instant
from sync.policy.model import Policy, User
from sync.protocol.messages import (
    Change,
    Clock,
    Mutation,
    OfflineDecision,
    Outcome,
    Result,
    StaleDecisions,
)
from sync.replication.decisions import GENESIS, ChainHead
from sync.replication.digest import digest_text
from sync.replication.entities import (
    NOT_A_POLICY,
    ROLE,
    SETTINGS,
    USER,
    Entity,
    StoredUsers,
    built_policy,
)
from sync.replication.offline import DEFAULT_LEASE_SECONDS, Lease
from sync.replication.overlay import LocalEdit

_SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE entities (
    rowid INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    document TEXT NOT NULL,
    UNIQUE (kind, id)
);
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY,
    base_version INTEGER NOT NULL,
    edit TEXT NOT NULL,
    made_at TEXT NOT NULL,
    wall_at TEXT NOT NULL,
    cancels INTEGER,
    outcome TEXT,
    version INTEGER,
    answered_at TEXT
);
CREATE TABLE outcomes (
    seq INTEGER PRIMARY KEY,
    edit TEXT NOT NULL,
    made_at TEXT NOT NULL,
    wall_at TEXT NOT NULL,
    outcome TEXT NOT NULL,
    code TEXT,
    reason TEXT,
    version INTEGER,
    conflict TEXT,
    answered_at TEXT NOT NULL,
    dismissed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE decisions (
    seq INTEGER PRIMARY KEY,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    request TEXT NOT NULL,
    allowed INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL,
    clock TEXT NOT NULL,
    lease_fresh INTEGER NOT NULL,
    pending TEXT NOT NULL,
    policy_version INTEGER NOT NULL
);
CREATE VIRTUAL TABLE entity_text USING fts5(kind UNINDEXED, text, tokenize = 'unicode61');
CREATE VIRTUAL TABLE outbox_text USING fts5(text, tokenize = 'unicode61');
CREATE VIRTUAL TABLE decision_text USING fts5(text, tokenize = 'unicode61');
"""


def _search_without_copies(db: Any) -> None:
    """Migration 2: the entity search index keeps neither a copy of its text (results
    are read from `entities`) nor word positions (a search is words, never phrases):
    a 50,000-user snapshot's index is written in half the time, in a fifth of the
    space. Every row is indexed again."""
    conn = db.conn
    conn.execute("DROP TABLE entity_text")
    conn.execute(_ENTITY_TEXT)
    rows = conn.execute(
        "SELECT rowid, kind, id, document FROM entities WHERE kind != ?", (SETTINGS,)
    )
    conn.executemany(
        "INSERT INTO entity_text (rowid, text) VALUES (?, ?)",
        (
            (rowid, _search_text(kind, entity_id, orjson.loads(document)))
            for rowid, kind, entity_id, document in rows.fetchall()
        ),
    )


_ENTITY_TEXT = (
    "CREATE VIRTUAL TABLE entity_text USING fts5("
    "text, content = '', contentless_delete = 1, detail = none, tokenize = 'unicode61')"
)

_SCHEMA_3 = """
CREATE TABLE changes (
    version INTEGER PRIMARY KEY,
    author TEXT NOT NULL,
    device TEXT NOT NULL,
    client TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at TEXT NOT NULL,
    edit TEXT NOT NULL
);
CREATE VIRTUAL TABLE change_text USING fts5(
    text, content = '', contentless_delete = 1, detail = none, tokenize = 'unicode61'
);
"""

HISTORY_KEPT = 200_000
"""Changes the replica keeps in its history (module rules)."""

MIGRATIONS = (
    Migration(1, "tables: meta, entities, outbox, outcomes, decisions, search", _SCHEMA_1),
    Migration(2, "entity search without a copy of the text", _search_without_copies),
    Migration(3, "the policy's history as received: changes and their search", _SCHEMA_3),
)

OUTBOX_TABLES = ("meta", "outbox", "outcomes", "decisions")
"""What `salvage` keeps of a damaged replica: everything the server does not have."""


_OUTBOX_QUERY = (
    "SELECT seq, base_version, edit, made_at, wall_at, cancels, outcome, version FROM outbox "
)
_OUTCOMES_QUERY = (
    "SELECT seq, edit, made_at, outcome, code, reason, version, conflict, answered_at FROM outcomes"
)


_ENTITY_SEARCH = (
    "SELECT e.kind, e.id FROM entity_text t JOIN entities e ON e.rowid = t.rowid "
    "WHERE entity_text MATCH ? LIMIT ?"
)
_SEARCH_QUERIES = {
    "outbox_text": "SELECT rowid FROM outbox_text WHERE outbox_text MATCH ? LIMIT ?",
    "decision_text": "SELECT rowid FROM decision_text WHERE decision_text MATCH ? LIMIT ?",
}


_COLUMNS = {
    "outbox": frozenset({"seq", "base_version", "edit", "made_at", "wall_at", "cancels",
                         "outcome", "version", "answered_at"}),
    "outcomes": frozenset({"seq", "edit", "made_at", "wall_at", "outcome", "code", "reason",
                           "version", "conflict", "answered_at", "dismissed"}),
    "decisions": frozenset({"seq", "prev_hash", "hash", "request", "allowed", "reason", "at",
                            "clock", "lease_fresh", "pending", "policy_version"}),
}  # fmt: skip
"""The columns of the tables `rebuild` restores: rescued rows name no others."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    base_version: int
    edit: dict[str, Any]
    made_at: str
    wall_at: str
    cancels: int | None = None
    outcome: str | None = None
    version: int | None = None

    def mutation(self, client: str) -> Mutation:
        return Mutation(client, self.seq, self.base_version, self.edit)

    def local(self) -> LocalEdit:
        return LocalEdit(self.seq, self.edit, parse_instant(self.made_at))


@dataclass(frozen=True, slots=True)
class Attention:
    """An outcome a person must see: rejected, superseded, or a conflict with both values."""

    seq: int
    edit: dict[str, Any]
    made_at: str
    outcome: str
    code: str | None
    reason: str | None
    version: int | None
    conflict: dict[str, Any] | None
    answered_at: str


@dataclass(slots=True)
class Meta:
    """The replica's single values, as stored in `meta`."""

    tenant: str = ""
    user: str = ""
    server: str = ""
    device: str = ""
    cursor: int = 0
    digest: str | None = None
    lease_seconds: int = DEFAULT_LEASE_SECONDS
    stale_decisions: str = StaleDecisions.ANSWER.value
    synced_at: str | None = None
    clock_mark: str | None = None
    ops: list[str] = field(default_factory=lambda: sorted(EDIT_TYPES))
    last_seq: int = 0
    """The highest seq this client has used (pushed or not)."""
    decisions_through: int = 0
    chain_seq: int = 0
    chain_hash: str = GENESIS
    access_expires: str | None = None
    held_back: str | None = None
    """Why the queue is held (an op the server does not accept), for the outbox view."""

    @property
    def lease(self) -> Lease:
        return Lease(
            self.lease_seconds,
            StaleDecisions(self.stale_decisions),
            parse_instant(self.synced_at) if self.synced_at else None,
        )

    @property
    def chain_head(self) -> ChainHead:
        return ChainHead(self.chain_seq, self.chain_hash)


_META_FIELDS = tuple(Meta.__dataclass_fields__)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _search_text(kind: str, entity_id: str, document: Any) -> str:
    """The words a role or user is found by: ids, names, description, attributes, rules."""
    words = [entity_id]
    if isinstance(document, dict):
        for key in ("name", "description"):
            if isinstance(document.get(key), str):
                words.append(document[key])
        attributes = document.get("attributes")
        if isinstance(attributes, dict):
            for key, value in attributes.items():
                words.append(key)
                # A list attribute (shifts: [early, weekend]) is found by each value.
                words.extend(map(str, value) if isinstance(value, list) else (str(value),))
        for part, word in (("grants", "grant"), ("denies", "deny")):
            for rule in document.get(part) or ():
                if isinstance(rule, dict):
                    actions = rule.get("actions")
                    listed = " ".join(map(str, actions)) if isinstance(actions, list) else ""
                    words.append(f"{word} {rule.get('resource')} {listed}")
        for entry in document.get("roles") or ():
            if isinstance(entry, dict) and isinstance(entry.get("role_id"), str):
                words.append(entry["role_id"])
        for parent in document.get("inherits") or ():
            if isinstance(parent, str):
                words.append(parent)
    return " ".join(words)


def change_search_text(change: Change) -> str:
    """The words a change is found by: who and from where, the op, and every id, name
    and value its edit names."""
    words = [change.author, change.device]
    stack: list[Any] = [change.edit]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(reversed(list(value.values())))
        elif isinstance(value, list):
            stack.extend(reversed(value))
        elif isinstance(value, str | int | float) and not isinstance(value, bool):
            words.append(str(value))
    return " ".join(words)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One change of the policy's history as this replica received it."""

    version: int
    author: str
    device: str
    client: str
    seq: int
    at: str
    edit: dict[str, Any]


class Replica:
    """One tenant's replica for one user (module rules)."""

    def __init__(self, file: ReplicaFile) -> None:
        self.file = file

    @classmethod
    def open(
        cls,
        directory: Path,
        tenant: str,
        user: str,
        *,
        create: bool = False,
        passphrase: Callable[[], str] | None = None,
        mode: KeyMode | None = None,
        wait: float = 10.0,
    ) -> Replica:
        """Open (or with `create`, make) the replica of `user` in `tenant`.

        Raises the errors of `app.replica_file` (ReplicaMissing, WrongKey, ...).
        """
        file = ReplicaFile.open(
            directory, tenant, user, migrations=MIGRATIONS, create=create,
            passphrase=passphrase, mode=mode, wait=wait,
        )  # fmt: skip
        replica = cls(file)
        if create:
            meta = replica.meta()
            if not meta.tenant:
                with file.write():
                    replica._set_meta(tenant=tenant, user=user, device="d-" + secrets.token_hex(12))
        return replica

    @property
    def client(self) -> str:
        return self.file.client_id

    @classmethod
    def rebuild(
        cls,
        directory: Path,
        tenant: str,
        user: str,
        *,
        passphrase: Callable[[], str] | None = None,
        wait: float = 10.0,
    ) -> tuple[Replica, int]:
        """A damaged replica: keep every row that can be read of what the server does not
        have (the outbox, outcomes, the decision chain and the replica's ids), move the
        damaged file aside and start a fresh replica holding them; the policy comes back
        with the next sync, as a snapshot. The rescued rows stay sealed in a rescue file
        beside the replica until a sync completes (`discard_rescued`).

        Returns the new replica and how many edits were kept. Raises ReplicaError.
        """
        salvage(directory, tenant, user, tables=OUTBOX_TABLES, passphrase=passphrase, wait=wait)
        rows = rescued_rows(directory, tenant, user, passphrase=passphrase)
        replica = cls.open(directory, tenant, user, create=True, passphrase=passphrase,
                           wait=wait)  # fmt: skip
        kept = replica._restore(rows)
        return replica, kept

    def _restore(self, rows: dict[str, list[dict[str, Any]]]) -> int:
        """Put rescued rows back (module rules); the confirmed policy is not among them."""
        keep = set(_META_FIELDS) - {"cursor", "digest", "tenant", "user"}
        with self.file.write():
            conn = self.file.conn
            for row in rows.get("meta", ()):
                if row.get("key") in keep and isinstance(row.get("value"), str):
                    conn.execute(
                        "INSERT INTO meta (key, value) VALUES (?, ?) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (row["key"], row["value"]),
                    )
            for table in ("outbox", "outcomes", "decisions"):
                for row in rows.get(table, ()):
                    columns = [c for c in row if c in _COLUMNS[table]]
                    if "seq" not in columns:
                        continue
                    conn.execute(
                        f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) "  # noqa: S608 - names checked against _COLUMNS
                        f"VALUES ({', '.join('?' * len(columns))})",
                        [row[c] for c in columns],
                    )
            for seq, edit in conn.execute("SELECT seq, edit FROM outbox").fetchall():
                text = " ".join(str(v) for v in orjson.loads(edit).values())
                conn.execute("INSERT INTO outbox_text (rowid, text) VALUES (?, ?)", (seq, text))
            highest = conn.execute(
                "SELECT max(seq) FROM (SELECT seq FROM outbox UNION ALL SELECT seq FROM outcomes)"
            ).fetchone()[0]
            last = conn.execute(
                "SELECT seq, hash FROM decisions ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            meta = self.meta()
            values: dict[str, Any] = {"last_seq": max(meta.last_seq, highest or 0)}
            if last is not None and last[0] > meta.chain_seq:
                values |= {"chain_seq": last[0], "chain_hash": last[1]}
            self._set_meta(**values)
            return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        self.file.close()

    # --- meta -----------------------------------------------------------------------------

    def query(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        """Rows of one SELECT (damage is named, not raw: `ReplicaFile.select`)."""
        return self.file.select(sql, parameters)

    def meta(self) -> Meta:
        rows = self.query("SELECT key, value FROM meta")
        values = {key: orjson.loads(value) for key, value in rows if key in _META_FIELDS}
        return Meta(**values)

    def _set_meta(self, **values: Any) -> None:
        """Set meta values (inside a write transaction)."""
        for key, value in values.items():
            if key not in _META_FIELDS:
                raise KeyError(key)
            self.file.conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, _dumps(value)),
            )

    def set_meta(self, **values: Any) -> None:
        with self.file.write():
            self._set_meta(**values)

    # --- the confirmed policy -------------------------------------------------------------

    def _document(self, kind: str, entity_id: str) -> Any:
        if holds_unstorable(entity_id):
            return None  # no such id is ever stored (nor can a lone surrogate be asked)
        rows = self.query(
            "SELECT document FROM entities WHERE kind = ? AND id = ?", (kind, entity_id)
        )
        return orjson.loads(rows[0][0]) if rows else None

    def entities(self) -> list[Entity]:
        """Every confirmed entity: settings, then roles, then users, in stored order."""
        rows = self._entity_rows()
        return _in_kind_order([Entity(kind, entity_id, orjson.loads(doc))
                               for kind, entity_id, doc in rows])  # fmt: skip

    def _entity_rows(self) -> list[tuple[str, str, str]]:
        """Every confirmed entity as stored, `(kind, id, document as JSON)`, by rowid."""
        with self.file.read():
            return self.file.conn.execute(
                "SELECT kind, id, document FROM entities ORDER BY rowid"
            ).fetchall()

    def has_policy(self) -> bool:
        return bool(self.query("SELECT 1 FROM entities LIMIT 1"))

    def entity_page(self, kind: str, after: int, limit: int) -> list[tuple[int, str, Any]]:
        """Up to `limit` confirmed entities of `kind` after rowid `after`, in stored order,
        as (rowid, id, document): what a list shows a page at a time."""
        rows = self.query(
            "SELECT rowid, id, document FROM entities WHERE kind = ? AND rowid > ? "
            "ORDER BY rowid LIMIT ?",
            (kind, after, limit),
        )
        return [(rowid, entity_id, orjson.loads(doc)) for rowid, entity_id, doc in rows]

    def entity_count(self, kind: str) -> int:
        """How many confirmed entities of `kind` the replica holds."""
        return int(self.query("SELECT count(*) FROM entities WHERE kind = ?", (kind,))[0][0])

    def entities_named(self, kind: str, ids: Sequence[str]) -> list[tuple[int, str, Any]]:
        """The confirmed entities of `kind` with these ids, in the order of `ids` (those
        not there left out), as (rowid, id, document)."""
        found: dict[str, tuple[int, str, Any]] = {}
        for start in range(0, len(ids), 500):
            part = list(ids[start : start + 500])
            marks = ", ".join("?" * len(part))
            for rowid, entity_id, doc in self.query(
                f"SELECT rowid, id, document FROM entities WHERE kind = ? AND id IN ({marks})",  # noqa: S608 - placeholders only
                (kind, *part),
            ):
                found[entity_id] = (rowid, entity_id, orjson.loads(doc))
        return [found[i] for i in ids if i in found]

    def load_policy(self, now: Instant) -> Policy:
        """The whole confirmed policy (repaired fail-closed if it does not load)."""
        return _policy(self.meta().tenant, self.entities(), now)

    def load_for_batch(self, now: Instant) -> tuple[Policy, StoredUsers]:
        """What a batch decides with: the confirmed policy without its users, which
        `StoredUsers` builds one at a time as the engine asks for them (`Engine`'s
        `load_user`), from their documents read here as text. Reading the text is a
        tenth of building 50,000 users, and each worker builds only its own.
        """
        rows = self._entity_rows()
        tenant = self.meta().tenant
        documents = {entity_id: doc for kind, entity_id, doc in rows if kind == USER}
        rest = _in_kind_order([Entity(kind, entity_id, orjson.loads(doc))
                               for kind, entity_id, doc in rows if kind != USER])  # fmt: skip
        policy = _policy(tenant, rest, now)

        def validated(user_id: str, document: Any) -> User | None:
            # The slow way, as a whole policy that does not build is read (`_policy`).
            if document is None:
                return None  # not JSON: fail closed, as an unknown user
            return _policy(tenant, [*rest, Entity(USER, user_id, document)], now).users.get(user_id)

        return policy, StoredUsers(documents, policy.roles, validated)

    def load_partial(self, user_id: str, names: Iterable[tuple[str, str]], now: Instant) -> Policy:
        """The part of the confirmed policy a decision for `user_id` needs: the
        settings, the user, the roles it holds and everything they inherit, plus
        the entities `names` (what pending edits name) and their roles' closure.

        Decisions for `user_id` are the same as on the whole policy: they read
        nothing else (the client issue: cold start independent of tenant size).
        """
        with self.file.read():
            tenant = self.meta().tenant
            loaded: dict[tuple[str, str], Any] = {}
            waiting: list[tuple[str, str]] = [(USER, user_id), *names]
            while waiting:
                kind, entity_id = waiting.pop()
                if (kind, entity_id) in loaded or kind not in (ROLE, USER):
                    continue
                document = self._document(kind, entity_id)
                loaded[kind, entity_id] = document
                if not isinstance(document, dict):
                    continue
                if kind == USER:
                    for entry in document.get("roles") or ():
                        if isinstance(entry, dict) and isinstance(entry.get("role_id"), str):
                            waiting.append((ROLE, entry["role_id"]))
                else:
                    for parent in document.get("inherits") or ():
                        if isinstance(parent, str):
                            waiting.append((ROLE, parent))
            types = self._document(SETTINGS, "resource_types")
            constraints = self._document(SETTINGS, "constraints") or []
        roles = {i for (k, i), d in loaded.items() if k == ROLE and d is not None}
        # A constraint on a role not loaded cannot be broken by the loaded users.
        kept = [
            c for c in constraints
            if isinstance(c, dict) and set(c.get("exclusive") or ()) <= roles
        ]  # fmt: skip
        entities = [Entity(SETTINGS, "resource_types", types or {}),
                    Entity(SETTINGS, "constraints", kept)]  # fmt: skip
        entities += [Entity(k, i, d) for (k, i), d in loaded.items() if d is not None]
        return _policy(tenant, _in_kind_order(entities), now)

    def replace_all(self, version: int, entities: Sequence[Entity], digest: int) -> None:
        """A snapshot: the confirmed policy becomes `entities` at `version`, in one transaction."""
        with self.file.write():
            conn = self.file.conn
            conn.execute("DELETE FROM entities")
            conn.execute("INSERT INTO entity_text (entity_text) VALUES ('delete-all')")
            # Rowids 1, 2, ... in order, as the emptied table would give them; each
            # entity's search row takes its entity's rowid. Named here, so the search
            # rows need no lookup (an INSERT ... SELECT per row took 7x the inserts).
            conn.executemany(
                "INSERT INTO entities (rowid, kind, id, document) VALUES (?, ?, ?, ?)",
                ((rowid, e.kind, e.id, _dumps(e.document)) for rowid, e in enumerate(entities, 1)),
            )
            conn.executemany(
                "INSERT INTO entity_text (rowid, text) VALUES (?, ?)",
                (
                    (rowid, _search_text(e.kind, e.id, e.document))
                    for rowid, e in enumerate(entities, 1)
                    if e.kind != SETTINGS
                ),
            )
            self._set_meta(cursor=version, digest=digest_text(digest))
            self._prune_confirmed(version)

    def apply_changes(
        self, version: int, after: Sequence[Entity], digest: int, history: Sequence[Change] = ()
    ) -> None:
        """A page of changes: each entity of `after` replaced (None: removed), the cursor
        moved to `version`, the digest set and the page's changes (`history`) recorded,
        in one transaction."""
        with self.file.write():
            conn = self.file.conn
            self._record_history(history)
            stale: set[int] = set()
            texts: dict[int, str] = {}
            for entity in after:
                old = conn.execute(
                    "SELECT rowid FROM entities WHERE kind = ? AND id = ?", (entity.kind, entity.id)
                ).fetchone()
                if old is not None:
                    stale.add(old[0])
                    texts.pop(old[0], None)
                if entity.document is None:
                    conn.execute(
                        "DELETE FROM entities WHERE kind = ? AND id = ?", (entity.kind, entity.id)
                    )
                    continue
                document = _dumps(entity.document)
                if old is None:
                    rowid = conn.execute(
                        "INSERT INTO entities (kind, id, document) VALUES (?, ?, ?)",
                        (entity.kind, entity.id, document),
                    ).lastrowid
                else:
                    rowid = old[0]
                    conn.execute(
                        "UPDATE entities SET document = ? WHERE rowid = ?", (document, rowid)
                    )
                if entity.kind != SETTINGS:
                    texts[rowid] = _search_text(entity.kind, entity.id, entity.document)
            # The search rows after the entities, each in rowid order: FTS5 writes out its
            # pending index whenever a rowid is below the one before, so in the page's
            # order it wrote (and later merged) a segment for nearly every entity.
            conn.executemany(
                "DELETE FROM entity_text WHERE rowid = ?", ((rowid,) for rowid in sorted(stale))
            )
            conn.executemany(
                "INSERT INTO entity_text (rowid, text) VALUES (?, ?)",
                ((rowid, texts[rowid]) for rowid in sorted(texts)),
            )
            self._set_meta(cursor=version, digest=digest_text(digest))
            self._prune_confirmed(version)

    def _record_history(self, history: Sequence[Change]) -> None:
        conn = self.file.conn
        if not history:
            return
        for change in history:
            inserted = conn.execute(
                "INSERT OR IGNORE INTO changes (version, author, device, client, seq, at, edit) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (change.version, change.author, change.device, change.client, change.seq,
                 change.at, _dumps(change.edit)),
            ).rowcount  # fmt: skip
            if inserted:
                conn.execute(
                    "INSERT INTO change_text (rowid, text) VALUES (?, ?)",
                    (change.version, change_search_text(change)),
                )
        ((newest,),) = conn.execute("SELECT max(version) FROM changes").fetchall()
        oldest_kept = newest - HISTORY_KEPT + 1
        conn.execute(
            "DELETE FROM change_text WHERE rowid IN "
            "(SELECT version FROM changes WHERE version < ?)",
            (oldest_kept,),
        )
        conn.execute("DELETE FROM changes WHERE version < ?", (oldest_kept,))

    def change(self, version: int) -> HistoryEntry | None:
        """The change that made `version`, if this replica received it (module rules)."""
        rows = self.query(
            "SELECT version, author, device, client, seq, at, edit FROM changes WHERE version = ?",
            (version,),
        )
        if not rows:
            return None
        number, author, device, client, seq, at, edit = rows[0]
        return HistoryEntry(number, author, device, client, seq, at, orjson.loads(edit))

    def _prune_confirmed(self, cursor: int) -> None:
        """Applied and merged edits the cursor has reached leave the outbox (their
        effect is in the confirmed policy now)."""
        conn = self.file.conn
        gone = conn.execute(
            "SELECT seq FROM outbox WHERE outcome IN ('applied', 'merged') AND version <= ?",
            (cursor,),
        ).fetchall()
        for (seq,) in gone:
            conn.execute("DELETE FROM outbox_text WHERE rowid = ?", (seq,))
        conn.execute(
            "DELETE FROM outbox WHERE outcome IN ('applied', 'merged') AND version <= ?", (cursor,)
        )

    # --- the outbox -----------------------------------------------------------------------

    def add_edits(
        self,
        documents: Sequence[dict[str, Any]],
        made_at: Instant,
        wall_at: Instant,
        cancels: int | None = None,
        clock_mark: Instant | None = None,
    ) -> list[int]:
        """Queue edits (documents as `Edit.to_document` writes them), in one transaction.

        Returns their seqs. The caller has checked them against the replica's view.
        """
        with self.file.write():
            meta = self.meta()
            seq = meta.last_seq
            seqs = []
            for document in documents:
                seq += 1
                self.file.conn.execute(
                    "INSERT INTO outbox (seq, base_version, edit, made_at, wall_at, cancels) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (seq, meta.cursor, _dumps(document), format_instant(made_at),
                     format_instant(wall_at), cancels),
                )  # fmt: skip
                self.file.conn.execute(
                    "INSERT INTO outbox_text (rowid, text) VALUES (?, ?)",
                    (seq, " ".join(str(v) for v in document.values())),
                )
                seqs.append(seq)
            self._set_meta(last_seq=seq)
            if clock_mark is not None:
                self._set_meta(clock_mark=format_instant(clock_mark))
        return seqs

    def _rows(self, where: str, parameters: Sequence[Any] = ()) -> list[OutboxRow]:
        """Outbox rows; `where` is one of this module's constant clauses."""
        query = _OUTBOX_QUERY + where + " ORDER BY seq"
        rows = self.query(query, parameters)
        return [
            OutboxRow(seq, base, orjson.loads(edit), made, wall, cancels, outcome, version)
            for seq, base, edit, made, wall, cancels, outcome, version in rows
        ]

    def pending(self) -> list[OutboxRow]:
        """Edits without an outcome, lowest seq first."""
        return self._rows("WHERE outcome IS NULL")

    def outbox(self) -> list[OutboxRow]:
        """Every row of the outbox: pending, and applied ones not yet confirmed."""
        return self._rows("")

    def view_edits(self) -> list[LocalEdit]:
        """What the replica's view replays over the confirmed policy (module rules)."""
        with self.file.read():  # the cursor and the rows it selects from one snapshot
            rows = self._rows("WHERE outcome IS NULL OR version > ?", (self.meta().cursor,))
        return [row.local() for row in rows]

    def pushable(self, ops: Iterable[str], limit: int) -> tuple[list[OutboxRow], str | None]:
        """The next push: pending edits from the lowest seq, at most `limit`, stopping
        before the first whose op the server does not accept (seqs may not skip one).
        Also the reason the queue is held, if it is."""
        accepted = set(ops)
        batch: list[OutboxRow] = []
        for row in self.pending():
            op = row.edit.get("op")
            if op not in accepted:
                return batch, (f"edit {row.seq} ({op}) is held back: the server does not "
                               "accept that edit yet")  # fmt: skip
            batch.append(row)
            if len(batch) >= limit:
                break
        return batch, None

    def record_outcomes(self, results: Sequence[Result], answered_at: Instant) -> None:
        """Store the server's outcomes; rejected and conflicting edits go to `outcomes`."""
        at = format_instant(answered_at)
        with self.file.write():
            conn = self.file.conn
            cursor = self.meta().cursor
            for result in results:
                row = conn.execute(
                    "SELECT edit, made_at, wall_at FROM outbox WHERE seq = ? AND outcome IS NULL",
                    (result.seq,),
                ).fetchone()
                if row is None:
                    continue  # answered before (a repeated push)
                if result.outcome in (Outcome.APPLIED, Outcome.MERGED):
                    if result.version is not None and result.version <= cursor:
                        self._drop_outbox(result.seq)
                    else:
                        conn.execute(
                            "UPDATE outbox SET outcome = ?, version = ?, answered_at = ? "
                            "WHERE seq = ?",
                            (result.outcome.value, result.version, at, result.seq),
                        )
                    continue
                self._attention(result, row, at)
                self._drop_outbox(result.seq)

    def _attention(self, result: Result, row: Sequence[Any], at: str) -> None:
        conflict = None
        if result.conflict is not None:
            conflict = {"member": result.conflict.member, "server": result.conflict.server,
                        "client": result.conflict.client}  # fmt: skip
        self.file.conn.execute(
            "INSERT OR REPLACE INTO outcomes (seq, edit, made_at, wall_at, outcome, code, "
            "reason, version, conflict, answered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (result.seq, row[0], row[1], row[2], result.outcome.value, result.code,
             result.reason, result.version, _dumps(conflict) if conflict else None, at),
        )  # fmt: skip

    def _drop_outbox(self, seq: int) -> None:
        self.file.conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
        self.file.conn.execute("DELETE FROM outbox_text WHERE rowid = ?", (seq,))

    def renumber_from(self, expected: int) -> None:
        """The server expects seq `expected` next, below our first pending one: it
        has no record of ours from there (its database was restored, or this
        replica was rebuilt), so the pending edits take seqs from `expected` on."""
        with self.file.write():
            conn = self.file.conn
            pending = [row.seq for row in self.pending()]
            if not pending or pending[0] <= expected:
                return
            shift = pending[0] - expected
            for seq in pending:
                conn.execute("UPDATE outbox SET seq = ? WHERE seq = ?", (seq - shift, seq))
                found = conn.execute(
                    "SELECT text FROM outbox_text WHERE rowid = ?", (seq,)
                ).fetchone()
                conn.execute("DELETE FROM outbox_text WHERE rowid = ?", (seq,))
                if found is not None:
                    conn.execute(
                        "INSERT INTO outbox_text (rowid, text) VALUES (?, ?)",
                        (seq - shift, found[0]),
                    )
            self._set_meta(last_seq=pending[-1] - shift)

    def attention(self, *, include_dismissed: bool = False) -> list[Attention]:
        query = _OUTCOMES_QUERY + ("" if include_dismissed else " WHERE dismissed = 0")
        rows = self.query(query + " ORDER BY seq")
        return [
            Attention(
                seq,
                orjson.loads(edit),
                made,
                outcome,
                code,
                reason,
                version,
                orjson.loads(conflict) if conflict else None,
                answered,
            )
            for seq, edit, made, outcome, code, reason, version, conflict, answered in rows
        ]

    def dismiss(self, seq: int) -> bool:
        with self.file.write():
            changed = self.file.conn.execute(
                "UPDATE outcomes SET dismissed = 1 WHERE seq = ?", (seq,)
            ).rowcount
        return bool(changed)

    # --- the decision chain ---------------------------------------------------------------
    # A link is not indexed for search when it is appended: `decision_text` is filled in
    # seq order, just before a search reads it (`index_decisions`). Logging a batch is
    # then only its rows (indexing was 40% of it). So the index holds exactly the
    # decisions up to its highest rowid; those above it are still to be indexed.

    def extend_chain(
        self,
        rows_after: Callable[[ChainHead], Sequence[DecisionRow]],
        clock_mark: Instant | None,
    ) -> ChainHead:
        """Append the links `rows_after(head)` makes after the chain's head, and move the
        clock's mark, in one transaction. The head is read inside it, so no other
        writer's links come between. Returns the new head."""
        with self.file.write():
            head = self.meta().chain_head
            rows = rows_after(head)
            self.file.conn.executemany(
                "INSERT INTO decisions (seq, prev_hash, hash, request, allowed, reason, at, "
                "clock, lease_fresh, pending, policy_version) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            values: dict[str, Any] = {}
            if rows:
                head = ChainHead(rows[-1][0], rows[-1][2])
                values |= {"chain_seq": head.seq, "chain_hash": head.hash}
            if clock_mark is not None:
                values["clock_mark"] = format_instant(clock_mark)
            self._set_meta(**values)
        return head

    def unsent_decisions(self, limit: int) -> list[OfflineDecision]:
        """Links the server has not confirmed, oldest first."""
        return self._decisions_from(self.meta().decisions_through, limit)

    def decisions_confirmed(self, through: int) -> None:
        """The server has the chain up to `through`: links up to it may go."""
        with self.file.write():
            conn = self.file.conn
            conn.execute("DELETE FROM decisions WHERE seq <= ?", (through,))
            conn.execute("DELETE FROM decision_text WHERE rowid <= ?", (through,))
            self._set_meta(decisions_through=max(through, self.meta().decisions_through))

    def index_decisions(self, limit: int | None = None) -> int:
        """Index for search the decisions above the index's highest rowid (see above), or
        only the next `limit` of them (the app indexes a large log a piece at a time,
        staying responsive); returns how many were indexed."""
        query = "SELECT (SELECT max(seq) FROM decisions), (SELECT max(rowid) FROM decision_text)"
        last, indexed = self.query(query)[0]
        if last is None or (indexed is not None and last <= indexed):
            return 0
        done = 0
        with self.file.write():
            conn = self.file.conn
            _, indexed = conn.execute(query).fetchone()
            after = indexed or 0
            while (limit is None or done < limit) and (rows := conn.execute(
                "SELECT seq, request, allowed, reason FROM decisions WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (after, 4096 if limit is None else min(4096, limit - done)),
            ).fetchall()):  # fmt: skip
                conn.executemany(
                    "INSERT INTO decision_text (rowid, text) VALUES (?, ?)",
                    [
                        (seq, _decision_text(orjson.loads(request), bool(allowed), reason))
                        for seq, request, allowed, reason in rows
                    ],
                )
                after = rows[-1][0]
                done += len(rows)
        return done

    def _decisions_from(self, after: int, limit: int) -> list[OfflineDecision]:
        rows = self.query(
            "SELECT seq, prev_hash, hash, request, allowed, reason, at, clock, lease_fresh, "
            "pending, policy_version FROM decisions WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        )
        return [
            OfflineDecision(seq, prev, digest, orjson.loads(request), bool(allowed), reason, at,
                            Clock(clock), bool(fresh), tuple(orjson.loads(pending)), version)
            for seq, prev, digest, request, allowed, reason, at, clock, fresh, pending, version
            in rows
        ]  # fmt: skip

    # --- search ---------------------------------------------------------------------------

    def search(self, text: str, limit: int = 50) -> list[tuple[str, str]]:
        """Roles, users, outbox edits and decisions matching `text` (FTS5 prefix match
        on each word), as (kind, key) pairs: ("role", id), ("user", id),
        ("edit", seq), ("decision", seq)."""
        query = fts_query(text)
        if not query:
            return []
        self.index_decisions()
        # Whole words before prefixes ("sam" the user before "samantha"), each in the
        # policy's order. The index keeps no positions (module rules: FTS5), so there
        # is no bm25 to rank by; it scored every match anyway (115 ms for "depot").
        found: list[tuple[str, str]] = []
        for terms in (query.replace('"*', '"'), query):
            found += [hit for hit in self.query(_ENTITY_SEARCH, (terms, limit)) if hit not in found]
            if len(found) >= limit:
                break
        found = found[:limit]
        for kind, table in (("edit", "outbox_text"), ("decision", "decision_text")):
            found += [
                (kind, str(seq)) for (seq,) in self.query(_SEARCH_QUERIES[table], (query, limit))
            ]
        return found[:limit]  # fmt: skip

    # --- secrets --------------------------------------------------------------------------

    def tokens(self) -> tuple[str | None, str | None]:
        """(access token, refresh token) of the last sign-in, if any."""
        return self.file.secret_get("access_token"), self.file.secret_get("refresh_token")

    def store_tokens(self, access: str, refresh: str, access_expires: str) -> None:
        self.file.secret_set("refresh_token", refresh)
        self.file.secret_set("access_token", access)
        self.set_meta(access_expires=access_expires)

    def forget_tokens(self) -> None:
        self.file.secret_delete("access_token")
        self.file.secret_delete("refresh_token")


DecisionRow = tuple[int, str, str, str, int, str, str, str, int, str, int]
"""A row of `decisions`: seq, prev_hash, hash, request (JSON), allowed, reason, at, clock,
lease_fresh, pending (JSON) and policy_version."""


def _decision_text(request: Any, allowed: bool, reason: str) -> str:
    """The words a decision is found by: its request's user, action and resource, and
    its outcome and reason."""
    resource = request.get("resource")
    words = [str(request.get("user")), str(request.get("action"))]
    if isinstance(resource, dict):
        words += [str(resource.get("type")), str(resource.get("id", ""))]
    words += ["allowed" if allowed else "denied", reason]
    return " ".join(words)


def fts_query(text: str) -> str:
    """Each word of `text` as a quoted prefix term: FTS5 syntax in the input means nothing.

    A one-letter word is left out when there are longer ones: as a prefix it matches
    nearly every row ("r"* in a role id "r-d8ea...": every user holding a role, since
    "region" starts with r too) and only makes the search slow (38 ms instead of 1).
    """
    words = [w for w in "".join(c if c.isalnum() else " " for c in text).split() if w]
    if any(len(w) > 1 for w in words):
        words = [w for w in words if len(w) > 1]
    return " ".join(f'"{w}"*' for w in words[:16])


_KIND_ORDER = {SETTINGS: 0, ROLE: 1, USER: 2}


def _in_kind_order(entities: list[Entity]) -> list[Entity]:
    """`entities` sorted settings, then roles, then users (stored order within each, and
    any other kind last): the order a policy is built in."""
    entities.sort(key=lambda e: _KIND_ORDER.get(e.kind, 3))
    return entities


def _policy(tenant: str, entities: Sequence[Entity], now: Instant) -> Policy:
    """The policy of the replica's entities: built as stored (they were validated when
    they arrived, and the file is authenticated); validated again if they do not
    build, and read repaired, fail-closed, if they do not validate either (as the
    server reads a damaged store)."""
    try:
        return built_policy(tenant, entities, now)
    except NOT_A_POLICY:
        from sync.replication.repair import repair_entities  # noqa: PLC0415 - rarely needed

        return repair_entities(tenant, entities, now).policy
