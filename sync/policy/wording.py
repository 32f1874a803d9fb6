"""How the product quotes what people and peers wrote, and keeps its own text short.

Rules of this module:

- A reason or error that names something an outsider wrote quotes at most
  `QUOTE_CHARS` characters of it (a hostile 500-character role id must not
  come back whole, PROTOCOL.md § Limits).
- Text that travels in a message is capped in UTF-8 *bytes*, not characters:
  a character takes up to four bytes, and JSON may spell one in six.
"""

from __future__ import annotations

from typing import Any

QUOTE_CHARS = 64
"""Characters of an outsider's string a reason quotes."""


def quoted(value: Any, limit: int = QUOTE_CHARS) -> str:
    """`value` for a reason: its repr, a string cut to `limit` characters."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + "…"
    return repr(value)


def cap_bytes(text: str, limit: int) -> str:
    """`text` cut so that its UTF-8 encoding takes at most `limit` bytes (with an
    ellipsis where it was cut), never in the middle of a character."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    cut = data[: max(0, limit - 3)].decode("utf-8", "ignore")  # "…" is 3 bytes
    return cut + "…"
