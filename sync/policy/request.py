"""Requests, per policy-format.md § Request and decision.

A request is malformed when it is not a JSON object, lacks a string `user`,
`action` or `resource.type`, or has an unparseable `context.time`. Anything
else is decidable: `resource.attributes` or `context` that are not objects
count as empty, and a `null` time counts as absent (the caller's now applies).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sync.policy.instant import Instant, check_instant, parse_instant

_EMPTY: Mapping[str, Any] = {}


class MalformedRequest(ValueError):
    """The request cannot be decided; the message names the field."""


class Request:
    """One decidable request. Built by `parse_request` or directly by callers."""

    __slots__ = (
        "_time",
        "_time_text",
        "action",
        "context",
        "resource_attrs",
        "resource_id",
        "resource_type",
        "user",
    )

    def __init__(
        self,
        user: str,
        action: str,
        resource_type: str,
        resource_id: Any = None,
        resource_attrs: Mapping[str, Any] = _EMPTY,
        context: Mapping[str, Any] = _EMPTY,
        time: Instant | None = None,
        time_text: str | None = None,
    ) -> None:
        self.user = user
        self.action = action
        self.resource_type = resource_type
        self.resource_id = resource_id
        self.resource_attrs = resource_attrs
        self.context = context
        self._time = time
        self._time_text = time_text
        """`context.time` as given and already checked, parsed when first read."""

    @property
    def time(self) -> Instant | None:
        """The instant of `context.time`, or None when the request has none."""
        if self._time is None and self._time_text is not None:
            self._time = parse_instant(self._time_text)
        return self._time

    def to_dict(self) -> dict[str, Any]:
        """The request as a document (what `parse_request` reads)."""
        resource: dict[str, Any] = {"type": self.resource_type}
        if self.resource_id is not None:
            resource["id"] = self.resource_id
        if self.resource_attrs:
            resource["attributes"] = dict(self.resource_attrs)
        document: dict[str, Any] = {"user": self.user, "action": self.action, "resource": resource}
        if self.context:
            document["context"] = dict(self.context)
        return document


def parse_request(document: Any) -> Request:
    """Build a `Request` from a parsed JSON document.

    Raises MalformedRequest naming the missing or wrong field.
    """
    # Fast path first (this runs once per line of `fleetgate check`); the
    # checks below it only run to say what is wrong.
    try:
        user = document["user"]
        action = document["action"]
        resource = document["resource"]
        resource_type = resource["type"]
    except (KeyError, TypeError, IndexError):
        _explain_malformed(document)
        raise
    if type(user) is not str or type(action) is not str or type(resource_type) is not str:
        _explain_malformed(document)
    attrs = resource.get("attributes")
    if type(attrs) is not dict:
        attrs = _EMPTY
    context = document.get("context")
    text = None
    if type(context) is not dict:
        context = _EMPTY
    else:
        text = context.get("time")
        if text is not None:
            if type(text) is not str:
                raise MalformedRequest('"context.time" must be an RFC 3339 date-time string')
            try:
                check_instant(text)
            except ValueError as error:
                raise MalformedRequest(f'"context.time": {error}') from None
    return Request(user, action, resource_type, resource.get("id"), attrs, context, None, text)


def _explain_malformed(document: Any) -> None:
    """Raise MalformedRequest saying what makes `document` undecidable."""
    if type(document) is not dict:
        raise MalformedRequest("a request must be a JSON object")
    if type(document.get("user")) is not str:
        raise MalformedRequest('"user" must be a string')
    if type(document.get("action")) is not str:
        raise MalformedRequest('"action" must be a string')
    resource = document.get("resource")
    if type(resource) is not dict:
        raise MalformedRequest('"resource" must be an object with a string "type"')
    if type(resource.get("type")) is not str:
        raise MalformedRequest('"resource.type" must be a string')
