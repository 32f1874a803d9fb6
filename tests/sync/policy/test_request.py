"""sync.request: what a request is, and when it is malformed (policy-format.md
§ Request and decision)."""

from __future__ import annotations

from typing import Any

import pytest

from sync.policy.instant import parse_instant
from sync.policy.request import MalformedRequest, Request, parse_request

SPEC_EXAMPLE = {
    "user": "alice",
    "action": "update",
    "resource": {"type": "route", "id": "r-17", "attributes": {"region": "north"}},
    "context": {"time": "2026-11-22T09:30:00Z", "hour": 9},
}


def test_parses_the_spec_example_into_its_fields() -> None:
    request = parse_request(SPEC_EXAMPLE)
    assert request.user == "alice"
    assert request.action == "update"
    assert request.resource_type == "route"
    assert request.resource_id == "r-17"
    assert dict(request.resource_attrs) == {"region": "north"}
    assert dict(request.context) == {"time": "2026-11-22T09:30:00Z", "hour": 9}
    assert request.time == parse_instant("2026-11-22T09:30:00Z")


def test_to_dict_gives_back_a_document_that_parses_to_the_same_request() -> None:
    again = parse_request(parse_request(SPEC_EXAMPLE).to_dict())
    assert again.to_dict() == SPEC_EXAMPLE


def test_a_request_with_only_the_required_fields_is_decidable() -> None:
    request = parse_request({"user": "u", "action": "read", "resource": {"type": "doc"}})
    assert request.resource_id is None
    assert dict(request.resource_attrs) == {}
    assert dict(request.context) == {}
    assert request.time is None


def test_context_time_with_an_offset_is_the_same_instant_as_in_utc() -> None:
    request = parse_request(
        {
            "user": "u",
            "action": "read",
            "resource": {"type": "doc"},
            "context": {"time": "2026-11-22T11:30:00.5+02:00"},
        }
    )
    assert request.time == parse_instant("2026-11-22T09:30:00.500Z")


def test_null_context_time_counts_as_absent() -> None:
    request = parse_request(
        {"user": "u", "action": "read", "resource": {"type": "doc"}, "context": {"time": None}}
    )
    assert request.time is None


@pytest.mark.parametrize("attributes", [None, [], "x", 5])
def test_resource_attributes_that_are_not_an_object_count_as_empty(attributes: Any) -> None:
    request = parse_request(
        {"user": "u", "action": "read", "resource": {"type": "doc", "attributes": attributes}}
    )
    assert dict(request.resource_attrs) == {}


@pytest.mark.parametrize("context", [None, [], "x", 5])
def test_context_that_is_not_an_object_counts_as_empty(context: Any) -> None:
    request = parse_request(
        {"user": "u", "action": "read", "resource": {"type": "doc"}, "context": context}
    )
    assert dict(request.context) == {}
    assert request.time is None


@pytest.mark.parametrize("document", [None, [], "alice", 5, True, [SPEC_EXAMPLE]])
def test_a_request_that_is_not_an_object_is_malformed(document: Any) -> None:
    with pytest.raises(MalformedRequest, match="JSON object"):
        parse_request(document)


@pytest.mark.parametrize("field", ["user", "action"])
@pytest.mark.parametrize("value", ["<absent>", None, 5, True, ["alice"], {"id": "alice"}])
def test_a_request_without_a_string_user_or_action_is_malformed(field: str, value: Any) -> None:
    document: dict[str, Any] = {"user": "u", "action": "read", "resource": {"type": "doc"}}
    if value == "<absent>":
        del document[field]
    else:
        document[field] = value
    with pytest.raises(MalformedRequest, match=f'"{field}"'):
        parse_request(document)


@pytest.mark.parametrize(
    "resource", ["<absent>", None, "doc", ["doc"], {}, {"type": None}, {"type": 5}, {"id": "x"}]
)
def test_a_request_without_a_string_resource_type_is_malformed(resource: Any) -> None:
    document: dict[str, Any] = {"user": "u", "action": "read", "resource": resource}
    if resource == "<absent>":
        del document["resource"]
    with pytest.raises(MalformedRequest, match="resource"):
        parse_request(document)


@pytest.mark.parametrize(
    "time", ["tomorrow", "", "2026-11-22", "2026-11-22T09:30:00", "2026-02-30T00:00:00Z", 5, []]
)
def test_an_unparseable_context_time_is_malformed(time: Any) -> None:
    document = {
        "user": "u",
        "action": "read",
        "resource": {"type": "doc"},
        "context": {"time": time},
    }
    with pytest.raises(MalformedRequest, match=r"context\.time"):
        parse_request(document)


def test_a_star_type_or_action_is_not_malformed_but_left_to_the_decision() -> None:
    request = parse_request({"user": "u", "action": "*", "resource": {"type": "*"}})
    assert (request.action, request.resource_type) == ("*", "*")


def test_the_same_time_text_parses_to_the_same_instant_every_time() -> None:
    document = {
        "user": "u",
        "action": "read",
        "resource": {"type": "doc"},
        "context": {"time": "2026-11-22T09:30:00Z"},
    }
    first, second = parse_request(document), parse_request(document)
    assert first.time == second.time == parse_instant("2026-11-22T09:30:00Z")


def test_request_built_directly_defaults_to_no_attributes_no_context_no_time() -> None:
    request = Request("u", "read", "doc")
    assert request.to_dict() == {"user": "u", "action": "read", "resource": {"type": "doc"}}
    assert request.time is None
