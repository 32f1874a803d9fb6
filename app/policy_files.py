"""Policy files as the command line reads them: the size limit, the bytes, the parse.

`sync` reads no files and touches no global state (STYLE.md), so reading a
policy file and pausing the garbage collector while a large one is built
happen here, at the edge.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sync.policy.document import MAX_DOCUMENT_BYTES, PolicyInvalid, Problem, parse_policy_text
from sync.policy.instant import Instant
from sync.policy.model import Policy


class _Collection:
    """The pauses under way, in any thread, and what follows the last one."""

    lock = threading.Lock()
    pauses = 0
    enabled_after = True
    """Whether automatic collection comes back when the last pause ends."""
    off_for_good = False
    """Set by `automatic_collection_off`: nothing turns it back on."""


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building a large, acyclic structure.

    A 50,000-user policy is millions of objects allocated at once; each
    collection walks all of them again, which costs more than the parse.
    Pauses may overlap in several threads: the collector comes back (if it was
    on before the first) when the last one ends. A collector driven from a
    timer (the desktop app's: app/ui/background.py) asks `collection_paused`.
    """
    with _Collection.lock:
        if _Collection.pauses == 0:
            _Collection.enabled_after = gc.isenabled()
        _Collection.pauses += 1
        gc.disable()
    try:
        yield
    finally:
        with _Collection.lock:
            _Collection.pauses -= 1
            last = _Collection.pauses == 0
            if last and _Collection.enabled_after and not _Collection.off_for_good:
                gc.enable()


def collection_paused() -> bool:
    """Whether a `gc_paused` block is under way somewhere."""
    return _Collection.pauses > 0


def automatic_collection_off() -> None:
    """Turn the automatic cyclic collector off for the rest of the process (a pause that
    ends later does not turn it back on): someone collects on purpose instead."""
    with _Collection.lock:
        _Collection.off_for_good = True
        gc.disable()


def load_policy_file(
    path: str | Path, *, now: Instant, max_bytes: int = MAX_DOCUMENT_BYTES
) -> Policy:
    """Read, parse and validate a policy file (`.yaml`/`.yml` as YAML, else JSON).

    Raises PolicyInvalid (a file too large, unreadable, malformed or invalid)
    with problems naming the place.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise PolicyInvalid(
                [Problem("", f"{path} is {size:,} bytes, over the {max_bytes:,}-byte limit")]
            )
        data = path.read_bytes()
    except OSError as error:
        raise PolicyInvalid([Problem("", f"cannot read {path}: {error.strerror}")]) from None
    with gc_paused():
        yaml_syntax = path.suffix.lower() in (".yaml", ".yml")
        return parse_policy_text(data, yaml_syntax=yaml_syntax, now=now)
