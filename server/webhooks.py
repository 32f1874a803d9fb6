"""Webhooks: tenants' HTTP endpoints told about events, signed, retried, recorded.

Rules of this module:

- A delivery is queued (`enqueue`) in the transaction of the change it reports,
  one `webhook_deliveries` row per subscribed webhook, so a change that rolls
  back sends nothing and a committed one is never forgotten.
- Delivery is at least once. A row is claimed in a short transaction of its own
  (`FOR UPDATE SKIP LOCKED`, so several server processes share the queue) by
  pushing its `next_attempt_at` past the request timeout: that is its lease.
  The POST happens after that commit, outside any transaction, and its result is
  recorded in another one. A process that dies in between leaves the lease to
  expire and the row is sent again, so receivers dedupe on `Fleetgate-Delivery`
  (per webhook) or the body's `event_id` (per event).
- Only a 2xx answer delivers; redirects are not followed. Anything else (a
  status, a refused connection, no answer within `timeout` seconds in total)
  counts an attempt and retries after `min(max_delay, base_delay * 2**(attempts
  - 1))` seconds, ±10% so failed endpoints' retries spread out; the attempt that
  reaches `max_attempts` sets `failed_at` instead.
- Each request carries `Fleetgate-Signature: t=<unix time>,v1=<hex>`, the hex
  being HMAC-SHA256 under the webhook's secret of `b"<unix time>."` followed by
  the exact body bytes; `verify_signature` is the receiver's side of it.
- Removing a webhook also gives up its undelivered rows (`failed_at` set,
  `last_error` 'webhook removed'): nothing more is sent to it.
- Secrets, bodies and URLs (which may carry credentials) are never logged nor
  written to `last_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from server.sealing import SecretBox, SecretUnreadable

EVENTS = ("change.committed", "push.rejected", "device.revoked", "decisions.recorded")
"""What a webhook can subscribe to; "*" subscribes to all of them."""

ALL_EVENTS = "*"
MAX_URL_LENGTH = 2048

_LEASE_MARGIN = 30.0  # seconds a claim outlives the request timeout, to record the result
_logger = logging.getLogger("fleetgate.webhooks")

_CLAIM = """
    WITH due AS (
        SELECT id FROM webhook_deliveries
        WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= now()
        ORDER BY next_attempt_at
        LIMIT %s
        FOR UPDATE SKIP LOCKED
    )
    UPDATE webhook_deliveries AS d
    SET next_attempt_at = now() + %s * interval '1 second'
    FROM due, webhooks AS w
    WHERE d.id = due.id AND w.id = d.webhook_id
    RETURNING d.id, d.webhook_id, d.event, d.body, d.attempts, w.url, w.sealed_secret, w.tenant_id
"""
_RECORD_DELIVERED = """
    UPDATE webhook_deliveries
    SET delivered_at = now(), attempts = %s, last_status = %s, last_error = NULL
    WHERE id = %s AND delivered_at IS NULL AND failed_at IS NULL
"""
_RECORD_FAILED_ATTEMPT = """
    UPDATE webhook_deliveries
    SET attempts = %s, last_status = %s, last_error = %s,
        next_attempt_at = now() + %s * interval '1 second',
        failed_at = CASE WHEN %s THEN now() END
    WHERE id = %s AND delivered_at IS NULL AND failed_at IS NULL
"""


KEEP_DAYS = 30.0
"""How long the record of a delivery that ended is kept."""
PRUNE_EVERY = 3600.0
"""Seconds between two prunes by a running Deliverer."""


class WebhookInvalid(ValueError):
    """A webhook registration was refused; the message says why."""


@dataclass(frozen=True, slots=True)
class Webhook:
    """A tenant's endpoint; `secret` signs its deliveries and stays out of repr."""

    id: int
    tenant_id: int
    url: str
    events: tuple[str, ...]
    secret: str = field(repr=False)


def _context(tenant_id: int) -> str:
    return f"webhook-secret:{tenant_id}"


async def register(
    conn: psycopg.AsyncConnection[Any],
    tenant_id: int,
    url: str,
    events: Sequence[str],
    secret: str | None = None,
    *,
    box: SecretBox,
) -> Webhook:
    """Add a webhook for the tenant's `events` (names from EVENTS, or "*").

    Without a `secret` one is generated; the receiver needs it to check
    signatures. It is stored sealed by `box` (server/sealing.py), never in
    clear. Raises WebhookInvalid for a URL that is not http(s) with a host or
    is too long, for no or unknown events and for an empty secret;
    LookupError when there is no such tenant.
    """
    _check_url(url)
    subscribed = _checked_events(events)
    if secret is None:
        secret = secrets.token_urlsafe(32)
    elif not secret:
        raise WebhookInvalid("the webhook secret must not be empty")
    try:
        cursor = await conn.cursor(row_factory=tuple_row).execute(
            "INSERT INTO webhooks (tenant_id, url, events, sealed_secret)"
            " VALUES (%s, %s, %s, %s) RETURNING id",
            (tenant_id, url, list(subscribed), box.seal(secret, _context(tenant_id))),
        )
    except psycopg.errors.ForeignKeyViolation as error:
        raise LookupError(f"there is no tenant {tenant_id}") from error
    row = await cursor.fetchone()
    assert row is not None  # INSERT … RETURNING returns its row
    return Webhook(row[0], tenant_id, url, subscribed, secret)


async def remove(conn: psycopg.AsyncConnection[Any], tenant_id: int, webhook_id: int) -> bool:
    """Remove the tenant's webhook and give up its undelivered deliveries.

    Returns False when the tenant has no such active webhook (another tenant's
    id included).
    """
    cursor = await conn.cursor(row_factory=tuple_row).execute(
        """
        WITH removed AS (
            UPDATE webhooks SET removed_at = now()
            WHERE id = %s AND tenant_id = %s AND removed_at IS NULL
            RETURNING id
        ), given_up AS (
            UPDATE webhook_deliveries SET failed_at = now(), last_error = 'webhook removed'
            WHERE webhook_id IN (SELECT id FROM removed)
                AND delivered_at IS NULL AND failed_at IS NULL
        )
        SELECT count(*) FROM removed
        """,
        (webhook_id, tenant_id),
    )
    row = await cursor.fetchone()
    return row is not None and row[0] == 1


async def webhooks(
    conn: psycopg.AsyncConnection[Any], tenant_id: int, *, box: SecretBox | None = None
) -> list[Webhook]:
    """The tenant's active webhooks, oldest first, with their secrets opened by
    `box` (without one, secrets are left empty: listing needs no key).

    Raises SecretUnreadable when a secret was sealed under another key.
    """
    cursor = await conn.cursor(row_factory=tuple_row).execute(
        "SELECT id, tenant_id, url, events, sealed_secret FROM webhooks"
        " WHERE tenant_id = %s AND removed_at IS NULL ORDER BY id",
        (tenant_id,),
    )
    return [
        Webhook(id, tenant, url, tuple(events), box.open(sealed, _context(tenant)) if box else "")
        for id, tenant, url, events, sealed in await cursor.fetchall()
    ]


async def enqueue(
    conn: psycopg.AsyncConnection[Any], tenant_id: int, event: str, payload: Mapping[str, Any]
) -> int:
    """Queue `event` for the tenant's webhooks: `enqueue_many` with one event."""
    return await enqueue_many(conn, tenant_id, [(event, payload)])


async def enqueue_many(
    conn: psycopg.AsyncConnection[Any],
    tenant_id: int,
    events: Sequence[tuple[str, Mapping[str, Any]]],
) -> int:
    """Queue a delivery of each `(event, payload)` to each of the tenant's
    webhooks subscribed to it, in the caller's transaction; return how many
    were queued.

    A body is `{"event", "event_id", "tenant_id", "payload"}`, `event_id` a
    fresh uuid4 hex shared by every webhook's copy of that event. One
    statement for the whole list, whether or not the tenant has webhooks (a
    push queues one per committed change), and nothing is serialised for a
    tenant without webhooks. Raises ValueError for an event not
    in EVENTS or a payload that is not plain JSON.
    """
    if not events:
        return 0
    for event, _ in events:
        if event not in EVENTS:
            raise ValueError(f"{event!r} is not a webhook event; they are {', '.join(EVENTS)}")
    hooked = await conn.execute(
        "SELECT 1 FROM webhooks WHERE tenant_id = %s AND removed_at IS NULL LIMIT 1", (tenant_id,)
    )
    if await hooked.fetchone() is None:  # the usual case: nothing to serialise
        return 0
    names: list[str] = []
    bodies: list[str] = []
    for event, payload in events:
        message = {"event": event, "event_id": uuid.uuid4().hex, "tenant_id": tenant_id}
        names.append(event)
        bodies.append(
            json.dumps(
                {**message, "payload": payload},
                separators=(",", ":"),
                ensure_ascii=False,
                allow_nan=False,
            )
        )
    cursor = await conn.cursor(binary=True).execute(
        """
        INSERT INTO webhook_deliveries (webhook_id, tenant_id, event, body)
        SELECT w.id, w.tenant_id, e.event, e.body
        FROM webhooks w, unnest(%b::text[], %b::text[]) WITH ORDINALITY AS e (event, body, n)
        WHERE w.tenant_id = %s AND w.removed_at IS NULL
            AND (e.event = ANY (w.events) OR %s::text = ANY (w.events))
        ORDER BY e.n, w.id
        """,
        (names, bodies, tenant_id, ALL_EVENTS),
    )
    return cursor.rowcount


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `Fleetgate-Signature` header value for `body` sent at `timestamp` (unix seconds)."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify_signature(
    secret: str, header: str, body: bytes, now: float, tolerance: float = 300
) -> bool:
    """Whether `header` is a valid `Fleetgate-Signature` of `body` under `secret`,
    made within `tolerance` seconds of `now` (unix time), which refuses replays
    of old requests. Any `v1` entry may match, so a sender can sign with an old
    and a new secret while they rotate; malformed headers are simply invalid."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, equals, value = part.strip().partition("=")
        if not equals:
            return False
        if key == "t":
            if not (value.isascii() and value.isdigit()):
                return False
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(now - timestamp) > tolerance:
        return False
    expected = _mac(secret, timestamp, body).encode()
    return any(hmac.compare_digest(expected, candidate.encode()) for candidate in candidates)


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def _check_url(url: str) -> None:
    if len(url) > MAX_URL_LENGTH:
        raise WebhookInvalid(f"the webhook URL is longer than {MAX_URL_LENGTH} characters")
    if any(char.isspace() or not char.isprintable() for char in url):
        raise WebhookInvalid("the webhook URL must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 — raises ValueError for a port that is not a number
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as error:
        raise WebhookInvalid("the webhook URL is not a valid URL") from error
    if parts.scheme not in ("http", "https"):
        raise WebhookInvalid("the webhook URL must start with http:// or https://")
    if not parts.hostname:
        raise WebhookInvalid("the webhook URL has no host")


def _checked_events(events: Sequence[str]) -> tuple[str, ...]:
    if isinstance(events, str):
        raise WebhookInvalid("webhook events must be a list of event names, not one string")
    if not events:
        raise WebhookInvalid("a webhook must subscribe to at least one event")
    unknown = [event for event in events if event not in EVENTS and event != ALL_EVENTS]
    if unknown:
        raise WebhookInvalid(
            f"unknown webhook event {unknown[0]!r}: use {', '.join(EVENTS)} or {ALL_EVENTS!r}"
        )
    return tuple(dict.fromkeys(events))  # duplicates dropped, order kept


@dataclass(frozen=True, slots=True)
class _Claimed:
    id: int
    webhook_id: int
    event: str
    body: str
    attempts: int  # before this one
    url: str = field(repr=False)
    sealed_secret: str = field(repr=False)
    tenant_id: int = 0


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int | None
    error: str | None = None  # why it did not deliver, safe to store and log

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Deliverer:
    """Sends due webhook deliveries: `deliver_due` for one round, `run` to loop.

    `clock` gives the unix time signatures are stamped with. `on_result`, when
    given, is called with "delivered", "retry" or "failed" per attempt (for
    metrics). Raises ValueError for a batch, attempt count or timeout below 1,
    1 and 0, or a negative delay.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        http: httpx.AsyncClient,
        *,
        box: SecretBox,
        clock: Callable[[], float] = time.time,
        max_attempts: int = 8,
        base_delay: float = 1.0,
        max_delay: float = 3600.0,
        batch: int = 50,
        timeout: float = 5.0,
        on_result: Callable[[str], None] | None = None,
    ) -> None:
        if batch < 1 or max_attempts < 1 or timeout <= 0 or base_delay < 0 or max_delay < 0:
            raise ValueError(
                "a Deliverer needs batch >= 1, max_attempts >= 1, timeout > 0 and delays >= 0"
            )
        self._pool = pool
        self._http = http
        self._box = box
        self._clock = clock
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._batch = batch
        self._timeout = timeout
        self._on_result = on_result

    async def deliver_due(self) -> int:
        """Claim up to `batch` due deliveries, POST them concurrently and record
        each result; return how many were attempted. Database errors propagate
        (claimed rows are then retried when their lease runs out)."""
        claimed = await self._claim()
        if not claimed:
            return 0
        answers = await asyncio.gather(*(self._post(delivery) for delivery in claimed))
        results = await self._record(claimed, answers)
        if self._on_result is not None:
            for result in results:
                self._on_result(result)
        return len(claimed)

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Deliver until `stop` is set, polling every `interval` seconds (at once
        again after a full batch). A failing round is logged and retried, so a
        database hiccup never ends the loop."""
        pruned_at = 0.0
        while not stop.is_set():
            try:
                if self._clock() - pruned_at >= PRUNE_EVERY:
                    await self.prune()
                    pruned_at = self._clock()
                attempted = await self.deliver_due()
            except Exception:
                _logger.exception("a webhook delivery round failed; trying again in %g s", interval)
                attempted = 0
            if attempted < self._batch:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await stop.wait()

    async def prune(self, keep_days: float = KEEP_DAYS) -> int:
        """Forget deliveries that ended (delivered or given up) over `keep_days` ago; how many."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "DELETE FROM webhook_deliveries"
                " WHERE coalesce(delivered_at, failed_at) < now() - %s * interval '1 day'",
                (keep_days,),
            )
            return int(cursor.rowcount)

    async def _claim(self) -> list[_Claimed]:
        async with self._pool.connection() as conn, conn.transaction():
            cursor = await conn.cursor(row_factory=tuple_row).execute(
                _CLAIM, (self._batch, self._timeout + _LEASE_MARGIN)
            )
            return [_Claimed(*row) for row in await cursor.fetchall()]

    async def _post(self, delivery: _Claimed) -> _Answer:
        body = delivery.body.encode()
        try:
            secret = self._box.open(delivery.sealed_secret, _context(delivery.tenant_id))
        except SecretUnreadable:
            return _Answer(None, "the webhook's secret does not open with this server's key")
        headers = {
            "Content-Type": "application/json",
            "Fleetgate-Event": delivery.event,
            "Fleetgate-Delivery": str(delivery.id),
            "Fleetgate-Signature": signature(secret, int(self._clock()), body),
        }
        try:
            # httpx's timeout bounds each read; this bounds the whole request,
            # so an endpoint answering a byte at a time cannot outlive the lease.
            async with (
                asyncio.timeout(self._timeout),
                self._http.stream(
                    "POST",
                    delivery.url,
                    content=body,
                    headers=headers,
                    timeout=self._timeout,
                    follow_redirects=False,
                ) as response,
            ):
                status = response.status_code
        except (TimeoutError, httpx.TimeoutException):
            return _Answer(None, f"no answer within {self._timeout:g} s")
        # Whatever one endpoint does wrong is that delivery's retry, never the
        # round's; only the type is kept: messages may quote the URL.
        except Exception as error:  # noqa: BLE001
            return _Answer(None, f"request failed: {type(error).__name__}")
        return _Answer(status) if 200 <= status < 300 else _Answer(status, f"HTTP {status}")

    async def _record(self, claimed: list[_Claimed], answers: Sequence[_Answer]) -> list[str]:
        delivered: list[tuple[int, int | None, int]] = []
        failed: list[tuple[int, int | None, str | None, float, bool, int]] = []
        results: list[str] = []
        for delivery, answer in zip(claimed, answers, strict=True):
            attempts = delivery.attempts + 1
            if answer.delivered:
                delivered.append((attempts, answer.status, delivery.id))
                results.append("delivered")
                continue
            give_up = attempts >= self._max_attempts
            delay = self._retry_delay(attempts)
            failed.append((attempts, answer.status, answer.error, delay, give_up, delivery.id))
            results.append("failed" if give_up else "retry")
            _logger.warning(
                "webhook delivery %d to webhook %d: %s (attempt %d of %d%s)",
                delivery.id,
                delivery.webhook_id,
                answer.error,
                attempts,
                self._max_attempts,
                ", giving up" if give_up else f", retrying in {delay:.3g} s",
            )
        async with self._pool.connection() as conn, conn.transaction():
            cursor = conn.cursor()
            if delivered:
                await cursor.executemany(_RECORD_DELIVERED, delivered)
            if failed:
                await cursor.executemany(_RECORD_FAILED_ATTEMPT, failed)
        return results

    def _retry_delay(self, attempts: int) -> float:
        backoff = self._base_delay * 2.0 ** min(attempts - 1, 64)  # capped: no float overflow
        jitter = random.uniform(0.9, 1.1)  # noqa: S311 — spreads retries, not a secret
        return min(self._max_delay, backoff) * jitter
