"""Hostile clients against the running sync server: real websockets, a real Postgres.

Every case asserts the exact answer (error code, message, `fatal`), the close
code where the connection must end, that nothing was written (tenant version,
change log, client rows), and that the server still serves afterwards
(`assert_server_healthy`: a fresh client signs in, says hello and pushes).

Categories:

- Frames: not JSON, not an object, binary, empty, over 1 MiB, over 2 MiB,
  nesting 33 and 100,000 levels, NaN / infinities / huge numbers, duplicate
  keys, strings Postgres or UTF-8 cannot hold.
- Schema: unknown and server-to-client types, missing and extra fields
  (forged author or tenant), wrong types, strings over their limits, a batch
  over 500 mutations, an edit without `op`.
- State: messages outside their state, three mistakes close, a second one does
  not, an unsupported protocol version.
- Flood: more than the burst of 200 messages; other connections unaffected.
- Tokens: garbage, tampered, forged and foreign-key access tokens, expired,
  another device's, a tenant that does not exist, a removed user; refresh
  tokens reused, of another device, random, of another user, and guessed.
- Offline decisions that name their own author; a cursor from the future.
- Tenancy: another tenant's users, roles, snapshots and accounts; another
  client's id; the same client id in two tenants; replays.
- Authorization lies: assigning oneself tenant-admin, inheriting it, granting
  oneself rules.
- Size amplification: answers that would outgrow the 1 MiB limit by echoing the
  peer (errors, push results) or by serving what it stored (snapshots, changes).
- Sign-in: lockout after failures, names that look like SQL or patterns, the
  longest password, sign-in while live.
- A barrage of all of it at once, then a healthy server.

Every bug this suite found (12: frames measured in characters, infinities,
NUL and lone surrogates, a missing tenant's token, a refused hello that still
registered, one shared refresh limiter key, a flood's slow close, errors and
results that echoed the peer past the size limit, entities too large to sync)
is fixed; each case here keeps it fixed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import time
from typing import Any

import psycopg
import pytest
from websockets.exceptions import ConnectionClosed

from server import store
from server.app import SyncServer
from server.tokens import TokenSigner
from sync.protocol.messages import MAX_INT, MAX_MESSAGE_BYTES
from tests.server.conftest import ACME_POLICY, PASSWORD, TEST_KEY, add_account, make_tenant
from tests.server.wsclient import Client, decisions, mutation

ACME: dict[str, Any] = ACME_POLICY | {
    "roles": [
        *ACME_POLICY["roles"],
        {"id": "r-maker", "name": "role-maker",
         "grants": [{"resource": "role", "actions": ["read", "create", "update"]},
                    {"resource": "user", "actions": ["read"]}]},
    ],
    "users": [
        *ACME_POLICY["users"][:3],
        {"id": "mia", "roles": [{"role": "role-maker"}]},
        *ACME_POLICY["users"][3:],
    ],
}  # fmt: skip

BETA: dict[str, Any] = {
    "format": "fleetgate.policy/1",
    "tenant": "beta",
    "resource_types": ACME["resource_types"],
    "roles": [
        {"id": "r-admin", "name": "tenant-admin",
         "grants": [{"resource": "role", "actions": ["*"]},
                    {"resource": "user", "actions": ["*"]}]},
        {"id": "r-ops", "name": "ops",
         "grants": [{"resource": "vehicle", "actions": ["dispatch"]}]},
    ],
    "users": [
        {"id": "admin", "roles": [{"role": "tenant-admin"}]},
        {"id": "ann"},
        {"id": "bea", "roles": [{"role": "ops"}]},
    ],
}  # fmt: skip

TIMEOUT = 10.0
INVALID_TOKEN = "the access token is not valid: "
BAD_REFRESH = "the refresh token is not valid (unknown, used, expired or revoked)"
SIGN_IN_FAILED = "wrong tenant, user or password"
WHOLE_NUMBER = f"must be a whole number from 0 to {MAX_INT}"
_health = itertools.count()


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
async def acme(migrated: str) -> int:
    tenant_id = await make_tenant(migrated, "acme", document=ACME)
    for user in ("ann", "carl", "mia"):
        await add_account(migrated, tenant_id, user)
    return tenant_id


@pytest.fixture
async def beta(migrated: str, acme: int) -> int:
    return await make_tenant(migrated, "beta", document=BETA)


def error(
    code: str, message: str, *, fatal: bool = False, ref: str | None = None
) -> dict[str, Any]:
    """The exact `error` message expected on the wire."""
    answer: dict[str, Any] = {"type": "error", "code": code, "message": message, "fatal": fatal}
    if ref is not None:
        answer["ref"] = ref
    return answer


async def connect(server: SyncServer, **kwargs: Any) -> Client:
    return await Client.connect(server.port, **kwargs)


async def live(
    server: SyncServer,
    tenant: str = "acme",
    user: str = "admin",
    device: str = "dev-1",
    client: str = "cli-1",
) -> tuple[Client, dict[str, Any]]:
    """A session that signed in, said hello and caught up: (client, welcome)."""
    connection = await connect(server)
    answer = await connection.sign_in(tenant, user, PASSWORD, device)
    assert answer["type"] == "signed_in", answer
    welcome, _ = await connection.hello(answer["access_token"], device, client)
    assert welcome["type"] == "welcome", welcome
    return connection, welcome


async def next_message(client: Client, timeout: float = TIMEOUT) -> dict[str, Any] | None:
    """The next message, or None when the server closed instead."""
    try:
        return json.loads(await asyncio.wait_for(client.websocket.recv(), timeout))
    except ConnectionClosed:
        return None


async def until_closed(
    client: Client, timeout: float = TIMEOUT
) -> tuple[list[dict[str, Any]], int | None]:
    """Every message until the server closes, and its close code."""
    messages: list[dict[str, Any]] = []
    try:
        while True:
            messages.append(json.loads(await asyncio.wait_for(client.websocket.recv(), timeout)))
    except ConnectionClosed as closed:
        return messages, closed.rcvd.code if closed.rcvd else None


async def catch_up(
    server: SyncServer, device: str, client_id: str, cursor: int
) -> list[dict[str, Any]]:
    """A fresh admin session's hello: what it got until caught up, an error, or a close."""
    client = await connect(server)
    token = (await client.sign_in("acme", "admin", PASSWORD, device))["access_token"]
    await client.send(
        {"type": "hello", "protocol": 2, "access_token": token, "device": device,
         "client": client_id, "cursor": cursor}
    )  # fmt: skip
    messages: list[dict[str, Any]] = []
    while (message := await next_message(client)) is not None:
        messages.append(message)
        if message["type"] == "error" or (message["type"] == "changes" and not message["more"]):
            break
    await client.close()
    return messages


async def assert_alive(client: Client) -> None:
    """The connection still answers."""
    answer = await client.call({"type": "ping", "ref": "alive"})
    assert (answer["type"], answer["ref"]) == ("pong", "alive")


async def tenant_version(url: str, tenant_id: int) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        row = await store.tenant_by_id(conn, tenant_id)
    assert row is not None
    return row.version


async def scalar(url: str, sql: str, *params: Any) -> Any:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(sql, params)
        row = await cursor.fetchone()
    assert row is not None
    return row[0]


async def writes(url: str, tenant_id: int) -> tuple[int, int, int, int]:
    """What a push or hello can write for a tenant: version, changes, clients, outcomes."""
    return (
        await tenant_version(url, tenant_id),
        await scalar(url, "SELECT count(*) FROM change_log WHERE tenant_id = %s", tenant_id),
        await scalar(url, "SELECT count(*) FROM clients WHERE tenant_id = %s", tenant_id),
        await scalar(
            url,
            "SELECT coalesce(sum(last_seq - first_seq + 1), 0) FROM client_outcomes"
            " WHERE tenant_id = %s",
            tenant_id,
        ),
    )


async def assert_server_healthy(server: SyncServer, url: str, tenant_id: int) -> None:
    """A fresh client signs in, says hello and pushes one mutation that is applied."""
    n = next(_health)
    device, client_id = f"health-dev-{n}", f"health-cli-{n}"
    client = await connect(server)
    answer = await client.sign_in("acme", "admin", PASSWORD, device)
    assert answer["type"] == "signed_in", answer
    welcome, _ = await client.hello(answer["access_token"], device, client_id)
    assert welcome["type"] == "welcome", welcome
    version = welcome["version"]
    result = await client.push(
        mutation(client_id, 1, version, op="create_user", user_id=f"healthy-{n}")
    )
    assert result["results"] == [
        {"client": client_id, "seq": 1, "outcome": "applied", "version": version + 1}
    ]
    assert await tenant_version(url, tenant_id) == version + 1
    await client.close()


def _flip(text: str, index: int) -> str:
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1 :]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _nested(levels: int) -> str:
    """A ping whose unknown field `x` makes the document `levels` deep."""
    return '{"type":"ping","ref":"deep","x":' + "[" * (levels - 1) + "]" * (levels - 1) + "}"


# --- frames ----------------------------------------------------------------------------------


NOT_AN_OBJECT = "a message is a JSON object"


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ('{"type": "ping", "ref": ', "not JSON: Expecting value: line 1 column 25 (char 24)"),
        ('[{"type": "ping", "ref": "p"}]', NOT_AN_OBJECT),
        ("42", NOT_AN_OBJECT),
        ('"ping"', NOT_AN_OBJECT),
        ("null", NOT_AN_OBJECT),
        ("", "not JSON: Expecting value: line 1 column 1 (char 0)"),
    ],
    ids=["not-json", "array", "number", "string", "null", "empty"],
)
async def test_a_text_frame_that_is_not_a_json_object_is_malformed_and_not_fatal(
    server: SyncServer, acme: int, migrated: str, frame: str, message: str
) -> None:
    client = await connect(server)
    await client.send(frame)
    assert await client.recv() == error("malformed", message)
    await assert_alive(client)
    await client.close()
    await assert_server_healthy(server, migrated, acme)


async def test_a_binary_frame_is_malformed_and_not_fatal(
    server: SyncServer, acme: int, migrated: str
) -> None:
    client = await connect(server)
    await client.send(b'{"type": "ping", "ref": "p"}')
    assert await client.recv() == error("malformed", "binary frames are not part of the protocol")
    await assert_alive(client)
    await client.close()
    await assert_server_healthy(server, migrated, acme)


async def test_a_frame_just_over_one_mib_is_too_large_and_closes_1009(
    server: SyncServer, acme: int, migrated: str
) -> None:
    head, tail = '{"type":"ping","ref":"big","pad":"', '"}'
    frame = head + "x" * (MAX_MESSAGE_BYTES + 1 - len(head) - len(tail)) + tail
    assert len(frame.encode()) == MAX_MESSAGE_BYTES + 1
    client = await connect(server)
    await client.send(frame)
    assert await client.recv() == error("too_large", "message over 1,048,576 bytes", fatal=True)
    assert await client.closed() == 1009
    await assert_server_healthy(server, migrated, acme)


async def test_a_frame_over_one_mib_of_multibyte_characters_is_too_large(
    server: SyncServer, acme: int, migrated: str
) -> None:
    # Under 1 Mi characters, over 1 MiB of UTF-8: the limit is in bytes.
    frame = '{"type":"ping","ref":"big","pad":"' + "é" * 600_000 + '"}'
    assert len(frame) < MAX_MESSAGE_BYTES < len(frame.encode())
    client = await connect(server)
    await client.send(frame)
    assert await client.recv() == error("too_large", "message over 1,048,576 bytes", fatal=True)
    assert await client.closed() == 1009
    await assert_server_healthy(server, migrated, acme)


async def test_a_frame_over_two_mib_is_cut_off_by_the_library_with_1009_and_no_answer(
    server: SyncServer, acme: int, migrated: str
) -> None:
    client = await connect(server)
    with contextlib.suppress(ConnectionClosed):
        await client.send('{"type":"ping","ref":"' + "x" * (2 * MAX_MESSAGE_BYTES) + '"}')
    assert await until_closed(client) == ([], 1009)
    await assert_server_healthy(server, migrated, acme)


async def test_nesting_32_levels_is_read_and_answered_as_an_ordinary_mistake(
    server: SyncServer, acme: int, migrated: str
) -> None:
    client = await connect(server)
    await client.send(_nested(32))
    assert await client.recv() == error("malformed", "message: unknown field 'x'", ref="deep")
    await assert_alive(client)
    await client.close()
    await assert_server_healthy(server, migrated, acme)


async def test_nesting_33_levels_is_too_deep_fatal_and_closes_1008(
    server: SyncServer, acme: int, migrated: str
) -> None:
    client = await connect(server)
    await client.send(_nested(33))
    assert await client.recv() == error("too_deep", "nests deeper than 32", fatal=True, ref="deep")
    assert await client.closed() == 1008
    await assert_server_healthy(server, migrated, acme)


@pytest.mark.parametrize("opener", ["[", '{"a":'], ids=["lists", "objects"])
async def test_nesting_100000_levels_is_too_deep_without_crashing_the_server(
    server: SyncServer, acme: int, migrated: str, opener: str
) -> None:
    closer = "]" if opener == "[" else "}"
    client = await connect(server)
    await client.send(opener * 100_000 + "1" + closer * 100_000)
    assert await client.recv() == error("too_deep", "message nests too deeply", fatal=True)
    assert await client.closed() == 1008
    await assert_server_healthy(server, migrated, acme)


HELLO_PREFIX = '{"type":"hello","protocol":1,"access_token":"t","device":"d","client":"c","cursor":'


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ('{"type":"ping","ref":NaN}', "not JSON: NaN is not a JSON number"),
        ('{"type":"ping","ref":-Infinity}', "not JSON: -Infinity is not a JSON number"),
        (HELLO_PREFIX + "1e999}", "not JSON: number 1e999 is out of range"),
        (
            HELLO_PREFIX + "1" * 5000 + "}",
            "not JSON: Exceeds the limit (4300 digits) for integer string conversion: "
            "value has 5000 digits; use sys.set_int_max_str_digits() to increase the limit",
        ),
    ],
    ids=["nan", "minus-infinity", "1e999", "5000-digits"],
)
async def test_numbers_json_cannot_hold_are_malformed(
    server: SyncServer, acme: int, migrated: str, frame: str, message: str
) -> None:
    client = await connect(server)
    await client.send(frame)
    assert await client.recv() == error("malformed", message)
    await assert_alive(client)
    await client.close()
    await assert_server_healthy(server, migrated, acme)


DECISION = '{"request":{"n":1e999},"allowed":true,"reason":"","at":"2026-01-01T00:00:00Z","policy_version":1}'  # noqa: E501


@pytest.mark.parametrize("where", ["decision-request", "edit-attribute"])
async def test_an_infinite_number_inside_a_free_form_object_is_malformed_and_not_stored(
    server: SyncServer, acme: int, migrated: str, where: str
) -> None:
    session, welcome = await live(server)
    before = await writes(migrated, acme)
    audit_rows = await scalar(migrated, "SELECT count(*) FROM audit WHERE tenant_id = %s", acme)
    if where == "decision-request":
        frame = '{"type":"record_decisions","ref":"inf","decisions":[' + DECISION + "]}"
    else:
        edit = '{"op":"create_user","user_id":"eve","attributes":{"n":1e999}}'
        frame = (
            '{"type":"push","ref":"inf","mutations":[{"client":"cli-1","seq":1,'
            f'"base_version":{welcome["version"]},"edit":{edit}}}]}}'
        )
    await session.send(frame)
    # Refused while parsing, before the ref could be read.
    assert await session.recv() == error("malformed", "not JSON: number 1e999 is out of range")
    assert await writes(migrated, acme) == before
    assert (
        await scalar(migrated, "SELECT count(*) FROM audit WHERE tenant_id = %s", acme)
        == audit_rows
    )
    await assert_alive(session)
    await session.close()
    await assert_server_healthy(server, migrated, acme)


async def test_duplicate_keys_are_refused(server: SyncServer, acme: int, migrated: str) -> None:
    # As in policy documents and token payloads: a reader would see one value and the
    # server act on the other ({"type": "push", "type": "ping"}).
    client = await connect(server)
    await client.send('{"type":"ping","ref":"first","ref":"last"}')
    assert await client.recv() == error("malformed", "not JSON: duplicate key 'ref'")
    await client.send('{"type":"push","type":"ping","ref":"was-a-push"}')
    assert await client.recv() == error("malformed", "not JSON: duplicate key 'type'")
    await client.close()
    await assert_server_healthy(server, migrated, acme)


UNSTORABLE = "a string contains a NUL character or an unpaired surrogate"


@pytest.mark.parametrize(
    ("frame", "ref"),
    [
        ('{"type":"ping","ref":"\\ud800"}', None),
        ('{"type":"sign_in","ref":"s","tenant":"\\udfff","user":"admin","password":"p",'
         '"device":"d"}', "s"),
        ('{"type":"sign_in","ref":"s","tenant":"acme\\u0000","user":"admin","password":"p",'
         '"device":"d"}', "s"),
        ('{"type":"hello","protocol":1,"access_token":"TOKEN","device":"dev-1",'
         '"client":"c\\u0000","cursor":0}', None),
        ('{"type":"push","ref":"p","mutations":[{"client":"cli-0","seq":1,"base_version":0,'
         '"edit":{"op":"create_user","user_id":"eve","attributes":{"\\ud800":"x"}}}]}', "p"),
    ],
    ids=["surrogate-ref", "surrogate-tenant", "nul-tenant", "nul-client", "surrogate-key"],
)  # fmt: skip
async def test_a_string_postgres_or_utf8_cannot_hold_is_malformed_and_not_fatal(
    server: SyncServer, acme: int, migrated: str, frame: str, ref: str | None
) -> None:
    session, _ = await live(server, device="dev-1", client="cli-0")
    other = await connect(server)
    token = (await other.sign_in("acme", "admin", PASSWORD, "dev-1"))["access_token"]
    before = await writes(migrated, acme)
    client = session if '"push"' in frame else other
    await client.send(frame.replace("TOKEN", token))
    assert await client.recv() == error("malformed", UNSTORABLE, ref=ref)
    assert await writes(migrated, acme) == before
    await assert_alive(client)
    await session.close()
    await other.close()
    await assert_server_healthy(server, migrated, acme)


NEL = "\u0085"
"""Two bytes in UTF-8, five once repr() escapes it and JSON escapes the backslash."""


@pytest.mark.parametrize("where", ["type", "field-name"])
async def test_an_error_never_grows_past_the_limit_by_echoing_the_peer(
    server: SyncServer, acme: int, migrated: str, where: str
) -> None:
    text = NEL * 400_000
    document = (
        {"type": text, "ref": "e"} if where == "type" else {"type": "ping", "ref": "e", text: 1}
    )
    client = await connect(server)
    await client.send(json.dumps(document, ensure_ascii=False))
    answer = await next_message(client)
    assert answer is not None
    code = "unknown_type" if where == "type" else "malformed"
    assert [answer.get(k) for k in ("code", "fatal", "ref")] == [code, False, "e"]
    await assert_alive(client)


# --- schema ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"type": "frobnicate", "ref": "u"}, "no message type 'frobnicate' here"),
        ({"ref": "u"}, "no message type None here"),
        ({"type": 7, "ref": "u"}, "no message type 7 here"),
        ({"type": "welcome", "ref": "u", "tenant": "acme", "user": "admin", "version": 1,
          "catch_up": "changes"}, "no message type 'welcome' here"),
        ({"type": "changes", "ref": "u", "from_version": 0, "to_version": 1, "changes": [],
          "more": False}, "no message type 'changes' here"),
        ({"type": "push_result", "ref": "u", "results": []}, "no message type 'push_result' here"),
    ],
    ids=["unknown", "missing-type", "type-number", "welcome", "changes", "push-result"],
)  # fmt: skip
async def test_an_unknown_or_server_to_client_type_is_unknown_type(
    server: SyncServer, acme: int, migrated: str, document: dict[str, Any], message: str
) -> None:
    session, _ = await live(server)
    before = await writes(migrated, acme)
    await session.send(document)
    assert await session.recv() == error("unknown_type", message, ref="u")
    assert await writes(migrated, acme) == before
    await assert_alive(session)
    await session.close()
    await assert_server_healthy(server, migrated, acme)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"type": "sign_in", "tenant": "acme", "user": "admin", "device": "d"},
         "password: is missing"),
        ({"type": "push"}, "mutations: is missing"),
        ({"type": "push", "mutations": [{"client": "cli-1", "base_version": 0,
                                         "edit": {"op": "create_user", "user_id": "eve"}}]},
         "mutations[0].seq: is missing"),
        ({"type": "hello", "protocol": 2, "access_token": "t", "device": "d", "client": "c"},
         "cursor: is missing"),
    ],
    ids=["sign-in-password", "push-mutations", "mutation-seq", "hello-cursor"],
)  # fmt: skip
async def test_a_message_missing_a_field_is_malformed(
    server: SyncServer, acme: int, migrated: str, document: dict[str, Any], message: str
) -> None:
    client = await connect(server)
    await client.send(document | {"ref": "m"})
    assert await client.recv() == error("malformed", message, ref="m")
    await assert_alive(client)
    await client.close()
    await assert_server_healthy(server, migrated, acme)


def _create_eve(seq: int, base: int) -> dict[str, Any]:
    return mutation("cli-1", seq, base, op="create_user", user_id="eve")


@pytest.mark.parametrize(
    ("field", "where"),
    [("author", "push"), ("tenant", "push"), ("author", "mutation"), ("tenant", "mutation")],
    ids=["push-author", "push-tenant", "mutation-author", "mutation-tenant"],
)
async def test_a_forged_author_or_tenant_field_is_malformed_and_never_applied(
    server: SyncServer, acme: int, beta: int, migrated: str, field: str, where: str
) -> None:
    session, welcome = await live(server)
    before, beta_before = await writes(migrated, acme), await writes(migrated, beta)
    forged = {"author": "ann", "tenant": "beta"}[field]
    one = _create_eve(1, welcome["version"])
    if where == "push":
        push = {"type": "push", "ref": "f", "mutations": [one], field: forged}
        message = f"message: unknown field {field!r}"
    else:
        push = {"type": "push", "ref": "f", "mutations": [one | {field: forged}]}
        message = f"mutations[0]: unknown field {field!r}"
    assert await session.call(push) == error("malformed", message, ref="f")
    assert await writes(migrated, acme) == before
    assert await writes(migrated, beta) == beta_before
    # Seq 1 was not used: the honest mutation is applied, authored by the session's user.
    result = await session.push(one)
    assert result["results"][0]["outcome"] == "applied"
    async with await psycopg.AsyncConnection.connect(migrated) as conn:
        changes = await store.changes_after(conn, acme, welcome["version"], 10, None)
    assert [(c.author, c.device, c.edit["op"], c.edit["user_id"]) for c in changes] == [
        ("admin", "dev-1", "create_user", "eve")
    ]
    await session.close()
    await assert_server_healthy(server, migrated, acme)


async def test_a_forged_author_inside_an_edit_is_rejected_invalid_and_not_applied(
    server: SyncServer, acme: int, migrated: str
) -> None:
    session, welcome = await live(server)
    version = welcome["version"]
    forged = mutation("cli-1", 1, version, op="create_user", user_id="eve", author="ann")
    result = await session.push(forged)
    assert result["results"] == [
        {"client": "cli-1", "seq": 1, "outcome": "rejected", "code": "invalid",
         "reason": "create_user: unknown field 'author' (its fields: user_id, name, attributes)"}
    ]  # fmt: skip
    assert await tenant_version(migrated, acme) == version
    assert "eve" not in (await server.tenants.current(acme)).engine.policy.users
    await session.close()
    await assert_server_healthy(server, migrated, acme)


@pytest.mark.parametrize(
    "seq", ["1", 1.0, True, -1, MAX_INT + 1], ids=["string", "float", "bool", "negative", "2**53"]
)
async def test_a_seq_that_is_not_a_whole_number_in_range_is_malformed_and_not_applied(
    server: SyncServer, acme: int, migrated: str, seq: Any
) -> None:
    session, welcome = await live(server)
    before = await writes(migrated, acme)
    bad = _create_eve(1, welcome["version"]) | {"seq": seq}
    answer = await session.call({"type": "push", "ref": "s", "mutations": [bad]})
    assert answer == error("malformed", "mutations[0].seq: " + WHOLE_NUMBER, ref="s")
    assert await writes(migrated, acme) == before
    assert (await session.push(_create_eve(1, welcome["version"])))["results"][0]["version"] == (
        welcome["version"] + 1
    )
    await session.close()
    await assert_server_healthy(server, migrated, acme)


@pytest.mark.parametrize(
    ("document", "message", "ref"),
    [
        ({"type": "ping", "ref": "x" * 257}, "ref: must be 1 to 256 characters", None),
        ({"type": "ping", "ref": ""}, "ref: must be 1 to 256 characters", ""),
        ({"type": "sign_in", "ref": "l", "tenant": "t" * 257, "user": "admin",
          "password": "p", "device": "d"}, "tenant: must be 1 to 256 characters", "l"),
        ({"type": "sign_in", "ref": "l", "tenant": "acme", "user": "admin",
          "password": "p" * 1025, "device": "d"}, "password: must be 1 to 1024 characters", "l"),
        ({"type": "hello", "ref": "l", "protocol": 2, "access_token": "t" * 4097,
          "device": "d", "client": "c", "cursor": 0},
         "access_token: must be 1 to 4096 characters", "l"),
        ({"type": "refresh", "ref": "l", "refresh_token": "t", "device": "d" * 257},
         "device: must be 1 to 256 characters", "l"),
    ],
    ids=["ref-257", "ref-empty", "tenant-257", "password-1025", "token-4097", "device-257"],
)  # fmt: skip
async def test_a_string_outside_its_length_limits_is_malformed(
    server: SyncServer,
    acme: int,
    migrated: str,
    document: dict[str, Any],
    message: str,
    ref: str | None,
) -> None:
    client = await connect(server)
    await client.send(document)
    assert await client.recv() == error("malformed", message, ref=ref)
    assert await scalar(migrated, "SELECT count(*) FROM devices") == 0
    await assert_alive(client)
    await client.close()
    await assert_server_healthy(server, migrated, acme)


async def test_a_push_of_501_mutations_is_too_many_and_nothing_is_applied(
    server: SyncServer, acme: int, migrated: str
) -> None:
    session, welcome = await live(server)
    before = await writes(migrated, acme)
    version = welcome["version"]
    batch = [mutation("cli-1", i, version, op="create_user", user_id=f"u{i}") for i in range(501)]
    answer = await session.call({"type": "push", "ref": "many", "mutations": batch})
    assert answer == error("too_many", "mutations: more than 500 entries", ref="many")
    assert await writes(migrated, acme) == before
    assert (await session.push(_create_eve(1, version)))["results"][0]["outcome"] == "applied"
    await session.close()
    await assert_server_healthy(server, migrated, acme)


@pytest.mark.parametrize(
    "edit", [{"user_id": "eve"}, {"op": 7, "user_id": "eve"}], ids=["no-op", "op-number"]
)
async def test_an_edit_without_an_op_is_malformed_and_not_applied(
    server: SyncServer, acme: int, migrated: str, edit: dict[str, Any]
) -> None:
    session, welcome = await live(server)
    before = await writes(migrated, acme)
    bad = {"client": "cli-1", "seq": 1, "base_version": welcome["version"], "edit": edit}
    answer = await session.call({"type": "push", "ref": "e", "mutations": [bad]})
    assert answer == error("malformed", "mutations[0].edit.op: an edit names its op", ref="e")
    assert await writes(migrated, acme) == before
    await session.close()
    await assert_server_healthy(server, migrated, acme)


async def test_an_offline_decision_naming_its_own_user_is_malformed_and_not_recorded(
    server: SyncServer, acme: int, migrated: str
) -> None:
    session, welcome = await live(server)
    (decision,) = decisions("cli-1", 1, policy_version=welcome["version"])
    decision |= {"user": "ann", "device": "dev-ann"}
    answer = await session.call({"type": "record_decisions", "ref": "d", "decisions": [decision]})
    assert answer == error("malformed", "decisions[0]: unknown field 'device'", ref="d")
    assert await scalar(migrated, "SELECT count(*) FROM audit WHERE kind = 'decision.offline'") == 0
    await session.close()
    await assert_server_healthy(server, migrated, acme)


async def test_a_cursor_from_the_future_gets_a_snapshot_not_another_history(
    server: SyncServer, acme: int, migrated: str
) -> None:
    messages = await catch_up(server, "dev-f", "cli-f", MAX_INT)
    welcome, snapshots = messages[0], [m for m in messages if m["type"] == "snapshot"]
    assert welcome["catch_up"] == "snapshot"
    assert [m["chunk"] for m in snapshots] == list(range(snapshots[0]["chunks"]))
    assert messages[-1] == {
        "type": "changes", "from_version": welcome["version"], "to_version": welcome["version"],
        "changes": [], "more": False,
    }  # fmt: skip
    await assert_server_healthy(server, migrated, acme)


# --- state -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "message", "ref"),
    [
        ({"type": "push", "ref": "w", "mutations": [_create_eve(1, 0)]},
         "Push is not allowed while open", "w"),
        ({"type": "snapshot_resume", "snapshot": "s1-0000", "next_chunk": 0},
         "SnapshotResume is not allowed while open", None),
        ({"type": "record_decisions", "ref": "w", "decisions": []},
         "RecordDecisions is not allowed while open", "w"),
    ],
    ids=["push", "snapshot-resume", "record-decisions"],
)  # fmt: skip
async def test_a_session_message_before_hello_is_wrong_state(
    server: SyncServer,
    acme: int,
    migrated: str,
    document: dict[str, Any],
    message: str,
    ref: str | None,
) -> None:
    before = await writes(migrated, acme)
    client = await connect(server)
    await client.send(document)
    assert await client.recv() == error("wrong_state", message, ref=ref)
    assert await writes(migrated, acme) == before
    await assert_alive(client)
    await client.close()
    await assert_server_healthy(server, migrated, acme)


async def test_a_second_hello_while_live_is_wrong_state_and_the_session_stays_live(
    server: SyncServer, acme: int, migrated: str
) -> None:
    session = await connect(server)
    token = (await session.sign_in("acme", "admin", PASSWORD, "dev-1"))["access_token"]
    welcome, _ = await session.hello(token, "dev-1", "cli-1")
    again, after = await session.hello(token, "dev-1", "cli-1")
    assert (again, after) == (error("wrong_state", "Hello is not allowed while live"), [])
    result = await session.push(_create_eve(1, welcome["version"]))
    assert result["results"][0]["outcome"] == "applied"
    await session.close()
    await assert_server_healthy(server, migrated, acme)


async def test_sign_in_while_live_is_wrong_state_and_issues_nothing(
    server: SyncServer, acme: int, migrated: str
) -> None:
    session, _ = await live(server)
    tokens = await scalar(migrated, "SELECT count(*) FROM refresh_tokens")
    answer = await session.call(
        {"type": "sign_in", "ref": "again", "tenant": "acme", "user": "ann",
         "password": PASSWORD, "device": "dev-1"}
    )  # fmt: skip
    assert answer == error("wrong_state", "SignIn is not allowed while live", ref="again")
    assert await scalar(migrated, "SELECT count(*) FROM refresh_tokens") == tokens
    await assert_alive(session)
    await session.close()
    await assert_server_healthy(server, migrated, acme)


async def test_two_mistakes_are_answered_and_the_third_closes_with_1008(
    server: SyncServer, acme: int, migrated: str
) -> None:
    client = await connect(server)
    await client.send("nope")
    first = await client.recv()
    await client.send({"type": "frobnicate", "ref": "2"})
    second = await client.recv()
    assert (first["fatal"], second) == (
        False, error("unknown_type", "no message type 'frobnicate' here", ref="2"))  # fmt: skip
    await assert_alive(client)
    await client.send({"type": "push", "ref": "3", "mutations": []})
    assert await client.recv() == error(
        "wrong_state", "Push is not allowed while open", fatal=True, ref="3"
    )
    assert await client.closed() == 1008
    await assert_server_healthy(server, migrated, acme)


@pytest.mark.parametrize("version", [1, 3])
async def test_another_protocol_version_gets_upgrade_required_with_4426(
    server: SyncServer, acme: int, migrated: str, version: int
) -> None:
    client = await connect(server)
    token = (await client.sign_in("acme", "admin", PASSWORD, "dev-1"))["access_token"]
    await client.send(
        {"type": "hello", "protocol": version, "access_token": token, "device": "dev-1",
         "client": "cli-1", "cursor": 0, "capabilities": ["from", "the", "future"]}
    )  # fmt: skip
    assert await client.recv() == error(
        "upgrade_required",
        f"this server speaks sync protocol 2, not {version}: upgrade the client "
        "(its pending edits are kept)",
        fatal=True,
    )
    assert await client.closed() == 4426
    assert await scalar(migrated, "SELECT count(*) FROM clients") == 0
    await assert_server_healthy(server, migrated, acme)


# --- flood -----------------------------------------------------------------------------------

FLOOD_BATCH = 8
"""Frames sent before reading their answers: the server's receive queue (16) never fills."""


async def test_a_flood_past_the_burst_is_rate_limited_with_4429_and_others_carry_on(
    server: SyncServer, acme: int, migrated: str
) -> None:
    bystander, welcome = await live(server)
    flooder = await connect(server)
    messages: list[dict[str, Any]] = []
    started = time.monotonic()
    for batch in itertools.count():
        for i in range(FLOOD_BATCH):
            await flooder.send({"type": "ping", "ref": f"f{batch * FLOOD_BATCH + i}"})
        answers = [await next_message(flooder) for _ in range(FLOOD_BATCH)]
        messages += [a for a in answers if a is not None]
        if messages[-1]["type"] == "error":
            break
    rate = len(messages) / (time.monotonic() - started)
    pongs, last = messages[:-1], messages[-1]
    assert last == error("rate_limited", "too many messages", fatal=True)
    assert await flooder.closed() == 4429
    assert [(p["type"], p["ref"]) for p in pongs] == [("pong", f"f{i}") for i in range(len(pongs))]
    assert 200 <= len(pongs) < 200 + 2 * FLOOD_BATCH and rate > 1000
    await assert_alive(bystander)
    result = await bystander.push(_create_eve(1, welcome["version"]))
    assert result["results"][0]["outcome"] == "applied"
    await bystander.close()
    await assert_server_healthy(server, migrated, acme)


async def test_a_flood_sent_at_once_is_closed_4429_promptly(
    server: SyncServer, acme: int, migrated: str
) -> None:
    flooder = await connect(server)
    with contextlib.suppress(ConnectionClosed):
        for i in range(400):
            await flooder.send({"type": "ping", "ref": f"f{i}"})
    started = time.monotonic()
    messages, code = await until_closed(flooder)
    # Frames still queued after the refusal are read and dropped, so the close
    # handshake completes at once (not after the server's 2 s close timeout).
    assert (code, messages[-1]) == (4429, error("rate_limited", "too many messages", fatal=True))
    assert 200 <= len(messages) - 1 < 400
    assert time.monotonic() - started < 1.5
    await assert_server_healthy(server, migrated, acme)


# --- access tokens ---------------------------------------------------------------------------


def _tampered(token: str, how: str) -> str:
    prefix, payload, mac = token.split(".")
    if how == "flipped":
        return f"{prefix}.{_flip(payload, len(payload) // 2)}.{mac}"
    if how == "forged-claims":
        claims = json.loads(_unb64(payload))
        claims |= {"user": "ann", "expires_at": claims["expires_at"] + 10**6}
        return f"{prefix}.{_b64(json.dumps(claims).encode())}.{mac}"
    if how == "no-mac":
        return f"{prefix}.{payload}."
    if how == "prefix":
        return f"fg2.{payload}.{mac}"
    raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("garbage", "token is malformed: not three dot-separated parts"),
        ("flipped", "token signature does not match"),
        ("forged-claims", "token signature does not match"),
        ("no-mac", "token signature does not match"),
        ("prefix", "token has an unknown version prefix"),
        ("non-ascii", "token contains non-ASCII characters"),
        ("other-key", "token signature does not match"),
    ],
    ids=["garbage", "flipped", "forged-claims", "no-mac", "prefix", "non-ascii", "other-key"],
)
async def test_a_bad_access_token_is_unauthenticated_closes_4401_and_writes_nothing(
    server: SyncServer, acme: int, migrated: str, how: str, message: str
) -> None:
    client = await connect(server)
    genuine = (await client.sign_in("acme", "carl", PASSWORD, "dev-1"))["access_token"]
    if how == "garbage":
        token = "not-a-token"
    elif how == "non-ascii":
        token = "fg1.é.x"
    elif how == "other-key":
        token, _ = TokenSigner(b"x" * 32).issue(
            tenant_id=acme, tenant="acme", user="admin", device="dev-1", now=time.time()
        )
    else:
        token = _tampered(genuine, how)
    before = await writes(migrated, acme)
    welcome, after = await client.hello(token, "dev-1", "cli-1")
    assert (welcome, after) == (
        error("unauthenticated", INVALID_TOKEN + message, fatal=True), [])  # fmt: skip
    assert await client.closed() == 4401
    assert await writes(migrated, acme) == before
    await assert_server_healthy(server, migrated, acme)


async def test_an_expired_access_token_is_expired_token_and_closes_4401(
    server: SyncServer, acme: int, migrated: str
) -> None:
    token, _ = TokenSigner(TEST_KEY, lifetime=1).issue(
        tenant_id=acme, tenant="acme", user="admin", device="dev-1", now=1.0
    )
    client = await connect(server)
    welcome, _ = await client.hello(token, "dev-1", "cli-1")
    assert welcome == error("expired_token", "the access token has expired: refresh it", fatal=True)
    assert await client.closed() == 4401
    assert await scalar(migrated, "SELECT count(*) FROM clients") == 0
    await assert_server_healthy(server, migrated, acme)


async def test_a_token_for_device_a_in_a_hello_for_device_b_is_forbidden_4403(
    server: SyncServer, acme: int, migrated: str
) -> None:
    client = await connect(server)
    token = (await client.sign_in("acme", "admin", PASSWORD, "dev-a"))["access_token"]
    welcome, _ = await client.hello(token, "dev-b", "cli-1")
    assert welcome == error(
        "forbidden", "the access token was issued to another device", fatal=True
    )
    assert await client.closed() == 4403
    assert await scalar(migrated, "SELECT count(*) FROM clients") == 0
    await assert_server_healthy(server, migrated, acme)


async def test_a_token_for_a_tenant_that_does_not_exist_is_unauthenticated_4401(
    server: SyncServer, acme: int, migrated: str
) -> None:
    token, _ = server.signer.issue(
        tenant_id=acme + 1000, tenant="ghost", user="admin", device="dev-1", now=time.time()
    )
    client = await connect(server)
    welcome, _ = await client.hello(token, "dev-1", "cli-1")
    assert welcome == error("unauthenticated", "the token's tenant does not exist", fatal=True)
    assert await client.closed() == 4401
    assert await scalar(migrated, "SELECT count(*) FROM clients") == 0
    assert await scalar(migrated, "SELECT count(*) FROM devices") == 0
    await assert_server_healthy(server, migrated, acme)


async def _remove_ann(server: SyncServer) -> None:
    admin, welcome = await live(server, device="dev-admin", client="cli-admin")
    result = await admin.push(
        mutation("cli-admin", 1, welcome["version"], op="delete_user", user_id="ann")
    )
    assert result["results"][0]["outcome"] == "applied"
    await admin.close()


async def test_a_token_of_a_user_removed_from_the_policy_is_wiped_4409_and_claims_nothing(
    server: SyncServer, acme: int, migrated: str
) -> None:
    client = await connect(server)
    token = (await client.sign_in("acme", "ann", PASSWORD, "dev-ann"))["access_token"]
    await _remove_ann(server)
    version = await tenant_version(migrated, acme)
    welcome, _ = await client.hello(token, "dev-ann", "cli-ann")
    assert welcome == {"type": "wipe", "code": "user_removed", "reason": "user 'ann' was removed"}
    assert await client.closed() == 4409
    assert await tenant_version(migrated, acme) == version
    assert await scalar(migrated, "SELECT count(*) FROM clients WHERE client = 'cli-ann'") == 0
    await assert_server_healthy(server, migrated, acme)


async def test_a_live_session_of_a_user_removed_mid_session_is_wiped_and_changes_nothing(
    server: SyncServer, acme: int, migrated: str
) -> None:
    ann, _ = await live(server, user="ann", device="dev-ann", client="cli-ann")
    await _remove_ann(server)
    version = await tenant_version(migrated, acme)
    with contextlib.suppress(ConnectionClosed):
        await ann.send({"type": "push", "ref": "late", "mutations": [
            mutation("cli-ann", 1, version, op="assign_role", user_id="dora", role_id="r-admin")
        ]})  # fmt: skip
    messages, code = await until_closed(ann)
    assert {"type": "wipe", "code": "user_removed", "reason": "user 'ann' was removed"} in messages
    assert not any(m["type"] == "push_result" for m in messages)
    assert code == 4409
    assert await tenant_version(migrated, acme) == version
    assert not (await server.tenants.current(acme)).engine.policy.users["dora"].roles
    await ann.close()
    await assert_server_healthy(server, migrated, acme)


# --- refresh tokens --------------------------------------------------------------------------


async def test_a_refresh_token_used_again_after_its_successor_revokes_the_family(
    server: SyncServer, acme: int, migrated: str
) -> None:
    client = await connect(server)
    first = await client.sign_in("acme", "admin", PASSWORD, "dev-1")
    refresh = {"type": "refresh", "refresh_token": first["refresh_token"], "device": "dev-1"}
    second = await client.call(refresh)
    third = await client.call({"type": "refresh", "refresh_token": second["refresh_token"],
                               "device": "dev-1"})  # fmt: skip
    tokens = await scalar(migrated, "SELECT count(*) FROM refresh_tokens")
    assert await client.call(refresh | {"ref": "twice"}) == error(
        "unauthenticated", BAD_REFRESH, ref="twice"
    )
    assert await scalar(migrated, "SELECT count(*) FROM refresh_tokens") == tokens
    newest = {"type": "refresh", "refresh_token": third["refresh_token"], "device": "dev-1"}
    assert (await client.call(newest | {"ref": "family"}))["code"] == "unauthenticated"
    live_tokens = "SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL"
    assert await scalar(migrated, live_tokens) == 0
    await client.close()
    await assert_server_healthy(server, migrated, acme)


async def test_a_refresh_token_of_another_device_is_unauthenticated_and_not_spent(
    server: SyncServer, acme: int, migrated: str
) -> None:
    client = await connect(server)
    first = await client.sign_in("acme", "admin", PASSWORD, "dev-1")
    await client.sign_in("acme", "admin", PASSWORD, "dev-2")
    stolen = {"type": "refresh", "refresh_token": first["refresh_token"]}
    assert await client.call(stolen | {"ref": "x", "device": "dev-2"}) == error(
        "unauthenticated", BAD_REFRESH, ref="x"
    )
    assert (await client.call(stolen | {"device": "dev-1"}))["type"] == "signed_in"
    await client.close()
    await assert_server_healthy(server, migrated, acme)


async def test_a_random_refresh_token_is_unauthenticated(
    server: SyncServer, acme: int, migrated: str
) -> None:
    client = await connect(server)
    tokens = await scalar(migrated, "SELECT count(*) FROM refresh_tokens")
    answer = await client.call(
        {"type": "refresh", "ref": "rnd", "refresh_token": "A" * 43, "device": "dev-1"}
    )
    assert answer == error("unauthenticated", BAD_REFRESH, ref="rnd")
    assert await scalar(migrated, "SELECT count(*) FROM refresh_tokens") == tokens
    await assert_alive(client)
    await client.close()
    await assert_server_healthy(server, migrated, acme)


async def test_a_live_session_refreshing_with_another_users_token_is_forbidden(
    server: SyncServer, acme: int, migrated: str
) -> None:
    session, _ = await live(server)
    other = await connect(server)
    anns = await other.sign_in("acme", "ann", PASSWORD, "dev-ann")
    answer = await session.call(
        {"type": "refresh", "ref": "steal", "refresh_token": anns["refresh_token"],
         "device": "dev-ann"}
    )  # fmt: skip
    assert answer == error("forbidden", "that refresh token is not this session's", ref="steal")
    await assert_alive(session)
    await session.close()
    await other.close()
    await assert_server_healthy(server, migrated, acme)


async def test_bad_refresh_tokens_are_counted_per_address_not_for_everyone(
    server: SyncServer, acme: int, migrated: str
) -> None:
    attacker = await connect(server)
    for i in range(5):
        answer = await attacker.call(
            {"type": "refresh", "refresh_token": f"junk-{i}", "device": "dev-x"}
        )
        assert answer["code"] == "unauthenticated"
    elsewhere = server.limiter.blocked(tenant="", user="", address="198.51.100.7", now=time.time())
    victim = await connect(server)
    signed = await victim.sign_in("acme", "carl", PASSWORD, "dev-carl")
    renewed = await victim.call(
        {"type": "refresh", "refresh_token": signed["refresh_token"], "device": "dev-carl"}
    )
    assert (elsewhere, renewed["type"]) == (0.0, "signed_in")
    await assert_server_healthy(server, migrated, acme)


# --- tenancy ---------------------------------------------------------------------------------


async def test_naming_another_tenants_users_and_roles_finds_nothing_and_changes_neither(
    server: SyncServer, acme: int, beta: int, migrated: str
) -> None:
    session, welcome = await live(server)
    acme_before, beta_before = await writes(migrated, acme), await writes(migrated, beta)
    version = welcome["version"]
    result = await session.push(
        mutation("cli-1", 1, version, op="assign_role", user_id="bea", role_id="r-admin"),
        mutation("cli-1", 2, version, op="assign_role", user_id="dora", role_id="r-ops"),
        mutation("cli-1", 3, version, op="delete_user", user_id="bea"),
        mutation("cli-1", 4, version, op="unassign_role", user_id="bea", role_id="r-ops"),
    )
    assert [(r["outcome"], r.get("code")) for r in result["results"]] == [
        ("rejected", "not_found")
    ] * 4
    acme_after, beta_after = await writes(migrated, acme), await writes(migrated, beta)
    assert acme_after[:2] == acme_before[:2]  # version and change log
    assert beta_after == beta_before
    await session.close()
    await assert_server_healthy(server, migrated, acme)


async def test_a_mutation_of_another_client_is_wrong_client_not_applied_not_recorded(
    server: SyncServer, acme: int, migrated: str
) -> None:
    victim, welcome = await live(server, user="ann", device="dev-ann", client="cli-ann")
    attacker, _ = await live(server)
    version = welcome["version"]
    result = await attacker.push(mutation("cli-ann", 1, version, op="create_user", user_id="eve"))
    assert result["results"] == [
        {"client": "cli-ann", "seq": 1, "outcome": "rejected", "code": "wrong_client",
         "reason": "this mutation belongs to another client"}
    ]  # fmt: skip
    assert await tenant_version(migrated, acme) == version
    assert (
        await scalar(
            migrated, "SELECT last_seq FROM clients WHERE tenant_id = %s AND client = 'cli-ann'",
            acme,
        )
        == 0
    )  # fmt: skip
    own = await victim.push(mutation("cli-ann", 1, version, op="create_user", user_id="eve"))
    assert own["results"][0] == {
        "client": "cli-ann", "seq": 1, "outcome": "applied", "version": version + 1
    }  # fmt: skip
    await victim.close()
    await attacker.close()
    await assert_server_healthy(server, migrated, acme)


async def test_the_same_client_id_in_two_tenants_is_two_independent_clients(
    server: SyncServer, acme: int, beta: int, migrated: str
) -> None:
    in_acme, acme_welcome = await live(server, client="shared")
    in_beta, beta_welcome = await live(server, tenant="beta", device="dev-b", client="shared")
    a = await in_acme.push(
        mutation("shared", 1, acme_welcome["version"], op="create_user", user_id="x")
    )
    b = await in_beta.push(
        mutation("shared", 1, beta_welcome["version"], op="create_user", user_id="x")
    )
    assert (a["results"][0]["outcome"], b["results"][0]["outcome"]) == ("applied", "applied")
    assert await tenant_version(migrated, acme) == acme_welcome["version"] + 1
    assert await tenant_version(migrated, beta) == beta_welcome["version"] + 1
    await in_acme.close()
    await in_beta.close()
    await assert_server_healthy(server, migrated, acme)


async def test_resuming_another_tenants_snapshot_is_not_found(
    server: SyncServer, acme: int, beta: int, migrated: str
) -> None:
    beta_client = await connect(server)
    token = (await beta_client.sign_in("beta", "admin", PASSWORD, "dev-b"))["access_token"]
    welcome, after = await beta_client.hello(token, "dev-b", "cli-b")
    assert welcome["catch_up"] == "snapshot"
    snapshot_id = after[0]["snapshot"]
    session, _ = await live(server)
    resume = {"type": "snapshot_resume", "snapshot": snapshot_id, "next_chunk": 0}
    await session.send(resume)
    assert await session.recv() == error(
        "not_found", "no such snapshot chunk here (the tenant may have moved on): send hello again"
    )
    await assert_alive(session)
    # The id is good for the tenant that owns it.
    await beta_client.send(resume)
    chunk = await beta_client.recv_type("snapshot")
    assert (chunk["snapshot"], chunk["chunk"], chunk["part"]["tenant"]) == (snapshot_id, 0, "beta")
    await session.close()
    await beta_client.close()
    await assert_server_healthy(server, migrated, acme)


async def test_signing_in_to_another_tenant_with_this_tenants_password_fails(
    server: SyncServer, acme: int, beta: int, migrated: str
) -> None:
    client = await connect(server)
    answer = await client.sign_in("beta", "ann", PASSWORD, "dev-ann")
    assert answer == error("unauthenticated", SIGN_IN_FAILED, ref=answer["ref"])
    assert await scalar(migrated, "SELECT count(*) FROM devices") == 0
    assert (await client.sign_in("acme", "ann", PASSWORD, "dev-ann"))["tenant"] == "acme"
    await client.close()
    await assert_server_healthy(server, migrated, acme)


async def test_a_replayed_seq_gets_its_stored_outcome_and_applies_nothing(
    server: SyncServer, acme: int, migrated: str
) -> None:
    admin, welcome = await live(server)
    ann, _ = await live(server, user="ann", device="dev-ann", client="cli-ann")
    version = welcome["version"]
    first = await admin.push(_create_eve(1, version))
    later = await ann.push(
        mutation("cli-ann", 1, version, op="set_user_attribute", user_id="dora", key="k", value=1)
    )
    assert later["results"][0]["version"] == version + 2
    before = await writes(migrated, acme)
    replay = await admin.push(
        _create_eve(1, version),
        mutation("cli-1", 1, version + 2, op="delete_user", user_id="dora"),
    )
    assert replay["results"] == first["results"] * 2
    assert first["results"][0]["version"] == version + 1
    assert await writes(migrated, acme) == before
    assert "dora" in (await server.tenants.current(acme)).engine.policy.users
    await admin.close()
    await ann.close()
    await assert_server_healthy(server, migrated, acme)


async def test_a_batch_repeating_or_lowering_a_seq_applies_each_seq_once(
    server: SyncServer, acme: int, migrated: str
) -> None:
    session, welcome = await live(server)
    version = welcome["version"]
    gap = await session.push(mutation("cli-1", 5, version, op="create_user", user_id="eve"))
    assert gap == error(
        "seq_gap",
        "seq 5 was pushed where seq 1 was expected next (the last recorded seq is 0); nothing "
        "was recorded: push again from seq 1",
        ref=gap["ref"],
    ) | {"expected_seq": 1}
    result = await session.push(
        mutation("cli-1", 1, version, op="create_user", user_id="eve"),
        mutation("cli-1", 1, version, op="create_user", user_id="fay"),
        mutation("cli-1", 2, version, op="create_user", user_id="gus"),
        mutation("cli-1", 1, version, op="create_user", user_id="hal"),
    )
    applied = {"client": "cli-1", "seq": 1, "outcome": "applied", "version": version + 1}
    assert result["results"] == [
        applied, applied,
        {"client": "cli-1", "seq": 2, "outcome": "applied", "version": version + 2},
        applied,
    ]  # fmt: skip
    users = (await server.tenants.current(acme)).engine.policy.users
    assert [u in users for u in ("eve", "fay", "gus", "hal")] == [True, False, True, False]
    assert await tenant_version(migrated, acme) == version + 2
    await session.close()
    await assert_server_healthy(server, migrated, acme)


@pytest.mark.parametrize("how", ["500-unknown-ops", "one-escaped-role-id"])
async def test_a_push_result_stays_under_the_limit_whatever_the_edits_echo(
    server: SyncServer, acme: int, migrated: str, how: str
) -> None:
    session, welcome = await live(server)
    version = welcome["version"]
    if how == "500-unknown-ops":
        mutations = [
            {"client": "cli-1", "seq": i, "base_version": version, "edit": {"op": "x" * 1900}}
            for i in range(1, 501)
        ]
    else:
        mutations = [
            mutation("cli-1", 1, version, op="assign_role", user_id="dora", role_id=NEL * 400_000)
        ]
    frame = json.dumps({"type": "push", "ref": "amp", "mutations": mutations}, ensure_ascii=False)
    assert len(frame.encode()) < MAX_MESSAGE_BYTES
    await session.send(frame)
    answer = await next_message(session)
    assert answer is not None
    assert (answer["type"], len(answer.get("results", ()))) == ("push_result", len(mutations))
    assert await tenant_version(migrated, acme) == version
    # The replica resends the batch after reconnecting: the same stored outcomes come back.
    again, _ = await live(server)
    await again.send(frame)
    assert await next_message(again) == answer


@pytest.mark.parametrize("by", ["snapshot", "changes"])
async def test_large_accepted_edits_do_not_stop_other_clients_catching_up(
    server: SyncServer, acme: int, migrated: str, by: str
) -> None:
    # carl (clerk) holds user:update: enough to grow any user's attributes.
    carl, welcome = await live(server, user="carl", device="dev-carl", client="cli-carl")
    version = welcome["version"]
    for seq in (1, 2):
        big = mutation("cli-carl", seq, version, op="set_user_attribute", user_id="dora",
                       key=f"k{seq}", value="x" * 600_000)  # fmt: skip
        (result,) = (await carl.push(big))["results"]
        if result["outcome"] != "applied":  # refusing oversized edits is a fix too
            break
    messages = await catch_up(server, "dev-late", "cli-late", 0 if by == "snapshot" else version)
    assert [m for m in messages if m["type"] == "error"] == []
    assert (messages[-1]["type"], messages[-1]["more"]) == ("changes", False)


# --- authorization lies ----------------------------------------------------------------------


async def _refused(
    server: SyncServer, url: str, tenant_id: int, user: str, *edits: dict[str, Any]
) -> list[dict[str, Any]]:
    """Push `edits` as `user`; assert nothing changed; the results."""
    session, welcome = await live(server, user=user, device=f"dev-{user}", client=f"cli-{user}")
    version = welcome["version"]
    result = await session.push(
        *(mutation(f"cli-{user}", i, version, **edit) for i, edit in enumerate(edits, 1))
    )
    assert await tenant_version(url, tenant_id) == version
    await session.close()
    return list(result["results"])


async def test_assigning_oneself_tenant_admin_without_role_assign_is_forbidden(
    server: SyncServer, acme: int, migrated: str
) -> None:
    (result,) = await _refused(
        server, migrated, acme, "carl", {"op": "assign_role", "user_id": "carl",
                                         "role_id": "r-admin"}
    )  # fmt: skip
    assert (result["outcome"], result["code"]) == ("rejected", "forbidden")
    assert result["reason"] == (
        "carl may not assign_role (needs role:assign on 'r-admin'): no grant matches role assign"
    )
    carl = (await server.tenants.current(acme)).engine.policy.users["carl"]
    assert [a.role_id for a in carl.roles] == ["r-clerk"]
    await assert_server_healthy(server, migrated, acme)


async def test_creating_a_role_that_inherits_tenant_admin_without_role_assign_is_forbidden(
    server: SyncServer, acme: int, migrated: str
) -> None:
    results = await _refused(
        server, migrated, acme, "mia",
        {"op": "create_role", "role_id": "r-sneak", "name": "sneak", "inherits": ["r-admin"]},
        {"op": "add_inheritance", "role_id": "r-driver", "parent_id": "tenant-admin"},
    )  # fmt: skip
    assert [(r["outcome"], r["code"]) for r in results] == [("rejected", "forbidden")] * 2
    # The reason names what is missing: role:assign on the parent.
    assert [r["reason"] for r in results] == [
        "mia may not create_role (needs role:assign on 'r-admin'): no grant matches role assign",
        "mia may not add_inheritance (needs role:assign on 'r-admin'): "
        "no grant matches role assign",
    ]
    policy = (await server.tenants.current(acme)).engine.policy
    assert "r-sneak" not in policy.roles and policy.roles["r-driver"].inherits == ()
    # mia may create roles: only the inheritance was refused.
    session, welcome = await live(server, user="mia", device="dev-mia", client="cli-mia")
    ok = await session.push(
        mutation("cli-mia", 3, welcome["version"], op="create_role", role_id="r-new", name="new")
    )
    assert ok["results"][0]["outcome"] == "applied"
    await session.close()
    await assert_server_healthy(server, migrated, acme)


async def test_granting_oneself_a_rule_without_user_update_is_forbidden(
    server: SyncServer, acme: int, migrated: str
) -> None:
    (result,) = await _refused(
        server, migrated, acme, "mia",
        {"op": "add_rule", "owner": "user:mia", "effect": "grant",
         "rule": {"resource": "user", "actions": ["*"]}},
    )  # fmt: skip
    assert (result["outcome"], result["code"]) == ("rejected", "forbidden")
    assert (
        result["reason"]
        == "mia may not add_rule (needs user:update on 'mia'): no grant matches user update"
    )
    assert (await server.tenants.current(acme)).engine.policy.users["mia"].grants == ()
    await assert_server_healthy(server, migrated, acme)


# --- sign-in ---------------------------------------------------------------------------------


async def test_six_wrong_passwords_lock_the_user_out_and_not_others(
    server: SyncServer, acme: int, migrated: str
) -> None:
    client = await connect(server)
    answers = [await client.sign_in("acme", "ann", f"wrong-{i}", "dev-ann") for i in range(5)]
    assert [a["code"] for a in answers] == ["unauthenticated"] * 5
    for password in ("wrong-6", PASSWORD):
        locked = await client.sign_in("acme", "ann", password, "dev-ann")
        assert (locked["code"], locked["fatal"]) == ("rate_limited", False)
        assert locked["message"].startswith("too many failed sign-ins; try again in ")
    assert await scalar(migrated, "SELECT count(*) FROM devices") == 0
    assert (await client.sign_in("acme", "carl", PASSWORD, "dev-carl"))["type"] == "signed_in"
    await client.close()
    await assert_server_healthy(server, migrated, acme)


@pytest.mark.parametrize(
    ("tenant", "user"),
    [("acme' OR '1'='1", "admin"), ("acme", "admin' --"), ("%", "%"), ("acme", "ADMIN")],
    ids=["quote-tenant", "comment-user", "wildcards", "case"],
)
async def test_sign_in_names_are_matched_exactly_not_as_patterns(
    server: SyncServer, acme: int, migrated: str, tenant: str, user: str
) -> None:
    client = await connect(server)
    answer = await client.sign_in(tenant, user, PASSWORD, "dev-1")
    assert answer == error("unauthenticated", SIGN_IN_FAILED, ref=answer["ref"])
    assert await scalar(migrated, "SELECT count(*) FROM refresh_tokens") == 0
    await client.close()
    await assert_server_healthy(server, migrated, acme)


async def test_the_longest_password_is_refused_like_any_wrong_one(
    server: SyncServer, acme: int, migrated: str
) -> None:
    client = await connect(server)
    answer = await client.sign_in("acme", "admin", "p" * 1024, "dev-1")
    assert answer == error("unauthenticated", SIGN_IN_FAILED, ref=answer["ref"])
    await assert_alive(client)
    await client.close()
    await assert_server_healthy(server, migrated, acme)


# --- all at once -----------------------------------------------------------------------------


BARRAGE: list[str | bytes] = [
    "", "nope", "[]", b"\x00\xff", "[" * 50_000, _nested(40), '{"type":"ping","ref":NaN}',
    '{"type":"welcome"}', '{"type":"push","ref":"p","mutations":[]}',
    '{"type":"hello","protocol":1,"access_token":"x","device":"d","client":"c","cursor":0}',
]  # fmt: skip
FAILED_CREDENTIALS: list[str | bytes] = [
    '{"type":"refresh","ref":"r","refresh_token":"junk","device":"d"}',
    '{"type":"sign_in","ref":"s","tenant":"acme","user":"ann","password":"x","device":"d"}',
]


async def test_the_server_serves_after_a_barrage_of_hostile_connections_at_once(
    server: SyncServer, acme: int, migrated: str
) -> None:
    bystander, welcome = await live(server)
    before = await writes(migrated, acme)

    async def hostile(frames: list[str | bytes]) -> None:
        client = await connect(server)
        with contextlib.suppress(ConnectionClosed):
            for frame in frames:
                await client.send(frame)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(until_closed(client), 1.0)
        await client.close()

    await asyncio.gather(
        *(hostile(BARRAGE[i:] + BARRAGE[:i]) for i in range(len(BARRAGE))),
        hostile(FAILED_CREDENTIALS),
    )
    assert await writes(migrated, acme) == before
    await assert_alive(bystander)
    result = await bystander.push(_create_eve(1, welcome["version"]))
    assert result["results"][0]["outcome"] == "applied"
    await bystander.close()
    await assert_server_healthy(server, migrated, acme)
