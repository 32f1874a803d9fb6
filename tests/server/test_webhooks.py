"""server.webhooks against a real Postgres and a real HTTP endpoint on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from server.sealing import SecretBox
from server.webhooks import (
    Deliverer,
    WebhookInvalid,
    enqueue,
    register,
    remove,
    signature,
    verify_signature,
    webhooks,
)

NOW = 1_750_000_000.0
BOX = SecretBox(b"webhook-tests-sealing-key-32-bytes!!")
HANG = None  # an answer that never comes


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A minimal HTTP/1.1 endpoint on 127.0.0.1: records each request and
    answers with the status set in `answers` for its path (200 unless told),
    or never answers (HANG)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.answers: dict[str, int | None] = {}
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._server.close()
        for handler in self._handlers:
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def paths(self) -> list[str]:
        return [request.path for request in self.requests]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *lines = head.split("\r\n")
            method, path, _version = request_line.split(" ")
            headers = {}
            for line in filter(None, lines):
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Request(method, path, headers, body))
            status = self.answers.get(path, 200)
            if status is HANG:
                await asyncio.Event().wait()
            answer = f"HTTP/1.1 {status} Answer\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            writer.write(answer.encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    endpoint = Receiver()
    await endpoint.start()
    yield endpoint
    await endpoint.stop()


@pytest.fixture
async def pool(migrated: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    connections: AsyncConnectionPool[Any] = AsyncConnectionPool(
        migrated, open=False, min_size=1, max_size=4
    )
    await connections.open(wait=True)
    yield connections
    await connections.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:  # no proxy for loopback
        yield client


async def _tenant(conn: psycopg.AsyncConnection[Any], name: str = "acme") -> int:
    cursor = await conn.execute("INSERT INTO tenants (name) VALUES (%s) RETURNING id", (name,))
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def _deliveries(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
    cursor = conn.cursor(row_factory=psycopg.rows.dict_row)
    await cursor.execute(
        "SELECT id, webhook_id, tenant_id, event, body, attempts, next_attempt_at,"
        " delivered_at, failed_at, last_status, last_error, created_at"
        " FROM webhook_deliveries ORDER BY id"
    )
    return await cursor.fetchall()


async def _until(deliverer: Deliverer, done: Any, rounds: int = 100) -> None:
    """Run delivery rounds until `done()` is true; the retry delays are tiny."""
    for _ in range(rounds):
        await deliverer.deliver_due()
        if await done():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the deliveries did not settle")


@pytest.mark.parametrize(
    ("url", "events", "secret", "message"),
    [
        ("ftp://example.com/hook", ["*"], None, "must start with http:// or https://"),
        ("example.com/hook", ["*"], None, "must start with http:// or https://"),
        ("https://", ["*"], None, "has no host"),
        ("https:///path", ["*"], None, "has no host"),
        ("https://example.com:port/", ["*"], None, "not a valid URL"),
        ("https://exa mple.com/", ["*"], None, "spaces or control characters"),
        ("https://example.com/\n", ["*"], None, "spaces or control characters"),
        ("https://example.com/" + "a" * 2029, ["*"], None, "longer than 2048 characters"),
        ("https://example.com/", [], None, "at least one event"),
        (
            "https://example.com/",
            ["change.committed", "nope"],
            None,
            "unknown webhook event 'nope'",
        ),
        ("https://example.com/", "change.committed", None, "not one string"),
        ("https://example.com/", ["*"], "", "secret must not be empty"),
    ],
)
async def test_register_refuses_what_it_cannot_deliver(
    aconn: psycopg.AsyncConnection[Any], url: str, events: Any, secret: str | None, message: str
) -> None:
    tenant = await _tenant(aconn)
    with pytest.raises(WebhookInvalid, match=re.escape(message)):
        await register(aconn, tenant, url, events, secret, box=BOX)
    assert await webhooks(aconn, tenant, box=BOX) == []


async def test_register_generates_a_secret_and_lists_the_webhook(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    tenant = await _tenant(aconn)
    longest = "https://example.com/" + "a" * 2028
    hook = await register(
        aconn, tenant, longest, ["device.revoked", "*", "device.revoked"], box=BOX
    )
    assert hook.events == ("device.revoked", "*")
    assert len(hook.secret) >= 40
    assert hook.secret not in repr(hook)
    chosen = await register(
        aconn, tenant, "http://127.0.0.1:9/x", ["push.rejected"], "s3cret", box=BOX
    )
    assert chosen.secret == "s3cret"
    assert await webhooks(aconn, tenant, box=BOX) == [hook, chosen]
    with pytest.raises(LookupError, match="no tenant 999"):
        await register(aconn, 999, "https://example.com/", ["*"], box=BOX)


async def test_enqueue_queues_one_delivery_per_subscribed_webhook_of_the_tenant(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    acme, globex = await _tenant(aconn, "acme"), await _tenant(aconn, "globex")
    committed = await register(aconn, acme, "https://a.example/1", ["change.committed"], box=BOX)
    everything = await register(aconn, acme, "https://a.example/2", ["*"], box=BOX)
    await register(aconn, acme, "https://a.example/3", ["device.revoked"], box=BOX)
    await register(aconn, globex, "https://g.example/", ["*"], box=BOX)

    assert await enqueue(aconn, acme, "change.committed", {"version": 7}) == 2
    queued = await _deliveries(aconn)
    assert [row["webhook_id"] for row in queued] == [committed.id, everything.id]
    assert {row["tenant_id"] for row in queued} == {acme}
    bodies = [json.loads(row["body"]) for row in queued]
    assert bodies[0] == bodies[1]
    assert bodies[0]["event"] == "change.committed"
    assert bodies[0]["tenant_id"] == acme
    assert bodies[0]["payload"] == {"version": 7}
    assert len(bodies[0]["event_id"]) == 32

    lonely = await _tenant(aconn, "lonely")
    assert await enqueue(aconn, lonely, "push.rejected", {}) == 0


async def test_enqueue_is_part_of_the_callers_transaction(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    tenant = await _tenant(aconn)
    await register(aconn, tenant, "https://a.example/", ["*"], box=BOX)
    async with aconn.transaction(force_rollback=True):
        assert await enqueue(aconn, tenant, "device.revoked", {"device": "d1"}) == 1
    assert await _deliveries(aconn) == []


async def test_enqueue_refuses_an_unknown_event(aconn: psycopg.AsyncConnection[Any]) -> None:
    tenant = await _tenant(aconn)
    with pytest.raises(ValueError, match="is not a webhook event"):
        await enqueue(aconn, tenant, "*", {})


async def test_a_delivery_arrives_signed_and_a_tampered_body_fails_the_signature(
    aconn: psycopg.AsyncConnection[Any],
    pool: AsyncConnectionPool[Any],
    http: httpx.AsyncClient,
    receiver: Receiver,
) -> None:
    tenant = await _tenant(aconn)
    hook = await register(aconn, tenant, receiver.url("/hook"), ["change.committed"], box=BOX)
    await enqueue(aconn, tenant, "change.committed", {"version": 3, "by": "zoë"})
    results: list[str] = []
    deliverer = Deliverer(pool, http, box=BOX, clock=lambda: NOW, on_result=results.append)

    assert await deliverer.deliver_due() == 1
    (request,) = receiver.requests
    (row,) = await _deliveries(aconn)
    assert request.method == "POST"
    assert request.path == "/hook"
    assert request.body == row["body"].encode()
    assert json.loads(request.body)["payload"] == {"version": 3, "by": "zoë"}
    assert request.headers["content-type"] == "application/json"
    assert request.headers["fleetgate-event"] == "change.committed"
    assert request.headers["fleetgate-delivery"] == str(row["id"])
    header = request.headers["fleetgate-signature"]
    assert header.startswith(f"t={int(NOW)},v1=")
    assert verify_signature(hook.secret, header, request.body, now=NOW + 10)
    assert not verify_signature(hook.secret, header, request.body.replace(b"3", b"4"), now=NOW)
    assert row["delivered_at"] is not None
    assert (row["attempts"], row["last_status"], row["last_error"]) == (1, 200, None)
    assert results == ["delivered"]
    assert await deliverer.deliver_due() == 0


def test_verify_signature_refuses_stale_foreign_and_malformed_headers() -> None:
    body = b'{"event":"push.rejected"}'
    good = signature("secret", 1000, body)
    assert verify_signature("secret", good, body, now=1000)
    assert verify_signature("secret", good, body, now=1300)
    assert not verify_signature("secret", good, body, now=1301)
    assert not verify_signature("secret", good, body, now=699)
    assert not verify_signature("other", good, body, now=1000)
    rotating = f"{good},v1={'0' * 64}"
    assert verify_signature("secret", rotating, body, now=1000)
    for malformed in ["", "garbage", "t=1000", good.split(",")[1], "t=x," + good.split(",")[1]]:
        assert not verify_signature("secret", malformed, body, now=1000)
    assert not verify_signature("secret", "t=1000,v1=é", body, now=1000)


async def test_a_failed_delivery_is_retried_later_until_the_endpoint_recovers(
    aconn: psycopg.AsyncConnection[Any],
    pool: AsyncConnectionPool[Any],
    http: httpx.AsyncClient,
    receiver: Receiver,
) -> None:
    tenant = await _tenant(aconn)
    await register(aconn, tenant, receiver.url("/flaky"), ["*"], box=BOX)
    await enqueue(aconn, tenant, "push.rejected", {"reason": "conflict"})
    (queued,) = await _deliveries(aconn)
    receiver.answers["/flaky"] = 500
    results: list[str] = []
    deliverer = Deliverer(pool, http, box=BOX, base_delay=0.01, on_result=results.append)

    assert await deliverer.deliver_due() == 1
    (retrying,) = await _deliveries(aconn)
    assert retrying["attempts"] == 1
    assert retrying["next_attempt_at"] > queued["next_attempt_at"]
    assert (retrying["last_status"], retrying["last_error"]) == (500, "HTTP 500")
    assert retrying["delivered_at"] is None
    assert retrying["failed_at"] is None

    receiver.answers["/flaky"] = 204

    async def delivered() -> bool:
        return (await _deliveries(aconn))[0]["delivered_at"] is not None

    await _until(deliverer, delivered)
    (done,) = await _deliveries(aconn)
    assert (done["attempts"], done["last_status"], done["last_error"]) == (2, 204, None)
    assert receiver.paths() == ["/flaky", "/flaky"]
    assert results == ["retry", "delivered"]


async def test_a_delivery_is_marked_failed_after_max_attempts(
    aconn: psycopg.AsyncConnection[Any],
    pool: AsyncConnectionPool[Any],
    http: httpx.AsyncClient,
    receiver: Receiver,
) -> None:
    tenant = await _tenant(aconn)
    await register(aconn, tenant, receiver.url("/broken"), ["*"], box=BOX)
    await enqueue(aconn, tenant, "device.revoked", {"device": "d1"})
    receiver.answers["/broken"] = 503
    results: list[str] = []
    deliverer = Deliverer(
        pool, http, box=BOX, max_attempts=3, base_delay=0.01, on_result=results.append
    )

    async def failed() -> bool:
        return (await _deliveries(aconn))[0]["failed_at"] is not None

    await _until(deliverer, failed)
    (row,) = await _deliveries(aconn)
    assert (row["attempts"], row["last_status"], row["delivered_at"]) == (3, 503, None)
    assert results == ["retry", "retry", "failed"]
    assert len(receiver.requests) == 3
    await asyncio.sleep(0.05)
    assert await deliverer.deliver_due() == 0


async def test_a_hanging_endpoint_times_out_without_holding_up_the_rest_of_the_batch(
    aconn: psycopg.AsyncConnection[Any],
    pool: AsyncConnectionPool[Any],
    http: httpx.AsyncClient,
    receiver: Receiver,
) -> None:
    tenant = await _tenant(aconn)
    hanging = await register(aconn, tenant, receiver.url("/hang"), ["*"], box=BOX)
    healthy = await register(aconn, tenant, receiver.url("/ok"), ["*"], box=BOX)
    await enqueue(aconn, tenant, "change.committed", {"version": 1})
    receiver.answers["/hang"] = HANG
    deliverer = Deliverer(pool, http, box=BOX, timeout=0.2)

    started = time.monotonic()
    assert await deliverer.deliver_due() == 2
    assert time.monotonic() - started < 1.5
    rows = {row["webhook_id"]: row for row in await _deliveries(aconn)}
    assert rows[healthy.id]["delivered_at"] is not None
    timed_out = rows[hanging.id]
    assert timed_out["delivered_at"] is None
    assert (timed_out["attempts"], timed_out["last_status"]) == (1, None)
    assert timed_out["last_error"] == "no answer within 0.2 s"
    assert hanging.secret not in timed_out["last_error"]


async def test_an_unreachable_endpoint_is_retried_with_a_short_error(
    aconn: psycopg.AsyncConnection[Any], pool: AsyncConnectionPool[Any], http: httpx.AsyncClient
) -> None:
    with socket.socket() as probe:  # a port nobody listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tenant = await _tenant(aconn)
    await register(aconn, tenant, f"http://127.0.0.1:{port}/", ["*"], box=BOX)
    await enqueue(aconn, tenant, "push.rejected", {})
    assert await Deliverer(pool, http, box=BOX).deliver_due() == 1
    (row,) = await _deliveries(aconn)
    assert (row["attempts"], row["last_status"]) == (1, None)
    assert row["last_error"] == "request failed: ConnectError"


async def test_a_removed_webhook_gets_nothing_more(
    aconn: psycopg.AsyncConnection[Any],
    pool: AsyncConnectionPool[Any],
    http: httpx.AsyncClient,
    receiver: Receiver,
) -> None:
    acme, globex = await _tenant(aconn, "acme"), await _tenant(aconn, "globex")
    hook = await register(aconn, acme, receiver.url("/gone"), ["*"], box=BOX)
    await enqueue(aconn, acme, "change.committed", {"version": 1})

    assert not await remove(aconn, globex, hook.id)
    assert await webhooks(aconn, acme, box=BOX) == [hook]
    assert await remove(aconn, acme, hook.id)
    assert not await remove(aconn, acme, hook.id)
    assert await webhooks(aconn, acme, box=BOX) == []
    assert await enqueue(aconn, acme, "change.committed", {"version": 2}) == 0

    assert await Deliverer(pool, http, box=BOX).deliver_due() == 0
    assert receiver.requests == []
    (given_up,) = await _deliveries(aconn)
    assert given_up["failed_at"] is not None
    assert given_up["last_error"] == "webhook removed"


async def test_two_deliverers_on_two_pools_never_send_the_same_delivery_twice(
    aconn: psycopg.AsyncConnection[Any],
    pool: AsyncConnectionPool[Any],
    migrated: str,
    http: httpx.AsyncClient,
    receiver: Receiver,
) -> None:
    tenant = await _tenant(aconn)
    for path in ("/a", "/b", "/c"):
        await register(aconn, tenant, receiver.url(path), ["*"], box=BOX)
    for version in range(10):
        await enqueue(aconn, tenant, "change.committed", {"version": version})
    async with AsyncConnectionPool(migrated, open=False, min_size=1, max_size=4) as other_pool:
        first = Deliverer(pool, http, box=BOX, batch=4)
        second = Deliverer(other_pool, http, box=BOX, batch=4)
        attempted = [0, 0]
        while True:
            counts = await asyncio.gather(first.deliver_due(), second.deliver_due())
            if sum(counts) == 0:
                break
            attempted = [total + count for total, count in zip(attempted, counts, strict=True)]

    sent = [request.headers["fleetgate-delivery"] for request in receiver.requests]
    queued = await _deliveries(aconn)
    assert sorted(sent) == sorted(str(row["id"]) for row in queued)
    assert len(set(sent)) == 30
    assert all(row["delivered_at"] is not None and row["attempts"] == 1 for row in queued)
    assert sum(attempted) == 30
    assert min(attempted) > 0  # both took a share


async def test_run_survives_a_failing_round_and_stops_when_told(
    aconn: psycopg.AsyncConnection[Any],
    pool: AsyncConnectionPool[Any],
    http: httpx.AsyncClient,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tenant = await _tenant(aconn)
    hook = await register(aconn, tenant, receiver.url("/run"), ["*"], box=BOX)
    await enqueue(aconn, tenant, "decisions.recorded", {"count": 1})
    results: list[str] = []

    def count(result: str) -> None:
        results.append(result)
        if len(results) == 1:
            raise RuntimeError("the metrics backend is down")

    stop = asyncio.Event()
    deliverer = Deliverer(pool, http, box=BOX, on_result=count)
    with caplog.at_level(logging.ERROR, logger="fleetgate.webhooks"):
        running = asyncio.create_task(deliverer.run(stop, interval=0.01))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if results:
                break
        await enqueue(aconn, tenant, "decisions.recorded", {"count": 2})
        for _ in range(200):
            await asyncio.sleep(0.01)
            if len(results) == 2:
                break
        stop.set()
        await asyncio.wait_for(running, timeout=2)

    assert results == ["delivered", "delivered"]
    assert len(receiver.requests) == 2
    assert "a webhook delivery round failed" in caplog.text
    assert hook.secret not in caplog.text
    assert '"count"' not in caplog.text


async def test_secrets_are_stored_sealed_and_bound_to_their_tenant(aconn: Any) -> None:
    cursor = await aconn.execute("INSERT INTO tenants (name) VALUES ('a'), ('b') RETURNING id")
    first, second = [row[0] for row in await cursor.fetchall()]
    hook = await register(aconn, first, "https://a.example/", ["*"], "the-secret", box=BOX)
    (stored,) = await (await aconn.execute("SELECT sealed_secret FROM webhooks")).fetchone()
    assert "the-secret" not in stored and stored.startswith("fgs1:")
    # Copied to another tenant's webhook, the sealed secret does not open.
    await aconn.execute(
        "INSERT INTO webhooks (tenant_id, url, events, sealed_secret)"
        " VALUES (%s, 'https://b.example/', '{*}', %s)",
        (second, stored),
    )
    from server.sealing import SecretUnreadable

    with pytest.raises(SecretUnreadable):
        await webhooks(aconn, second, box=BOX)
    with pytest.raises(SecretUnreadable):
        await webhooks(aconn, first, box=SecretBox(b"another-key-of-thirty-two-bytes!!"))
    assert await webhooks(aconn, first, box=BOX) == [hook]
    assert [h.url for h in await webhooks(aconn, first)] == ["https://a.example/"]  # no key needed


async def test_prune_forgets_deliveries_that_ended_long_ago_and_keeps_the_rest(
    aconn: psycopg.AsyncConnection[Any], pool: AsyncConnectionPool[Any], http: httpx.AsyncClient
) -> None:
    tenant = await _tenant(aconn)
    await register(aconn, tenant, "https://a.example/", ["*"], box=BOX)
    for count in range(4):
        await enqueue(aconn, tenant, "decisions.recorded", {"count": count})
    ids = [row[0] for row in await (await aconn.execute(
        "SELECT id FROM webhook_deliveries ORDER BY id")).fetchall()]  # fmt: skip
    await aconn.execute(
        "UPDATE webhook_deliveries SET delivered_at = now() - interval '40 days' WHERE id = %s",
        (ids[0],))  # fmt: skip
    await aconn.execute(
        "UPDATE webhook_deliveries SET failed_at = now() - interval '31 days' WHERE id = %s",
        (ids[1],))  # fmt: skip
    await aconn.execute(
        "UPDATE webhook_deliveries SET delivered_at = now() - interval '2 days' WHERE id = %s",
        (ids[2],))  # fmt: skip
    assert await Deliverer(pool, http, box=BOX).prune() == 2
    left = [row[0] for row in await (await aconn.execute(
        "SELECT id FROM webhook_deliveries ORDER BY id")).fetchall()]  # fmt: skip
    assert left == ids[2:]  # recent and pending ones stay
