"""Policy files as the server reads them: the size limit, the bytes, the parse.

`sync` reads no files and touches no global state (STYLE.md), so reading a
policy file and pausing the garbage collector while a large one is built
happen here, at the edge.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sync.policy.document import MAX_DOCUMENT_BYTES, PolicyInvalid, Problem, parse_policy_text
from sync.policy.instant import Instant
from sync.policy.model import Policy


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building a large, acyclic structure.

    A 50,000-user policy is millions of objects allocated at once; each
    collection walks all of them again, which costs more than the parse.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


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
