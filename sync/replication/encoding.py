"""JSON text of entity documents and members, made fast: orjson, with the standard
library where orjson refuses a value (an integer beyond 64 bits).

Rules of this module:

- `compact_json` is the text a store keeps and a size check measures: no
  whitespace, UTF-8 text as is, keys in the document's order.
- `canonical_json` adds sorted keys: the form hashed into digests, so two
  sides hash the same bytes whatever order a store kept the keys in.
- Both are functions of this module only, used by every side (server and
  replica), so what they hash and compare is the same bytes everywhere.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def compact_json(value: Any) -> str:
    """`value` as compact JSON text."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def canonical_json_bytes(value: Any) -> bytes:
    """`value` as canonical JSON (sorted keys, compact) in UTF-8."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8", "surrogatepass")
