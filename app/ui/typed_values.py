"""Values as a person types them in a key/value table: the check view's resource
attributes and context, the user editor's attributes.

Rules of this module (policy-format.md: values are JSON):

- What is typed is JSON when it reads as JSON (`20`, `true`, `["a"]`, `"20"`),
  otherwise the text itself as a string (`north`), as `fleetgate check --attr`
  reads values (app/cli.py). NaN and the infinities are not JSON: typed, they
  are text.
- What a table shows is what would be typed to get the value back: a string
  as it is, unless it would read as something else (`"20"` keeps its quotes);
  anything else as JSON.
"""

from __future__ import annotations

import json
from typing import Any

from sync.policy.document import reject_json_constant


def parse_value(text: str) -> Any:
    """The value `text` stands for (module rules)."""
    try:
        return json.loads(text, parse_constant=reject_json_constant)
    except ValueError:
        return text


def value_text(value: Any) -> str:
    """How `value` is shown and typed: what `parse_value` reads back as `value`."""
    if isinstance(value, str):
        read = parse_value(value)
        if type(read) is str and read == value:
            return value
    return json.dumps(value, ensure_ascii=False)
