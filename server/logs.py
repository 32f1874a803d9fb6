"""Structured logs: one JSON object per line on standard error.

Rules: an event name and plain fields; never a password, token, secret or
policy content (callers pass ids and counts only). `log` is the one way the
server writes a log line.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_logger = logging.getLogger("fleetgate.server")


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(level: int = logging.INFO) -> None:
    """Send the server's logs (and its libraries' warnings) to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    root = logging.getLogger("fleetgate")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def log(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Write one log line: `event` and plain `fields` (never a secret)."""
    _logger.log(level, event, extra={"fields": fields})
