"""Decisions, per policy-format.md § Request and decision."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from sync.policy.model import Effect


@dataclass(frozen=True, slots=True)
class Match:
    """A rule that decided: `source` is `role:<name>` or `user:<id>`; `rule` its index
    in that source's grants or denies; `via` the roles it was inherited through."""

    effect: Effect
    source: str
    rule: int
    via: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "effect": self.effect.value,
            "source": self.source,
            "rule": self.rule,
        }
        if self.via:
            entry["via"] = list(self.via)
        return entry


@dataclass(frozen=True, slots=True)
class Decision:
    """`allowed`, a `reason` a person can read, the `matched` rules and the
    `policy_version` decided against (None for a policy file).

    `wire` is the decision's JSON, computed on first use and kept: the engine
    hands out the same Decision object for every request a rule decides, so a
    batch writes bytes it already has.
    """

    allowed: bool
    reason: str
    matched: tuple[Match, ...] = ()
    policy_version: int | None = None
    _wire: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def wire(self) -> bytes:
        """The decision as one line of JSON (no newline)."""
        wire = self._wire
        if wire is None:
            wire = orjson.dumps(self.to_dict())
            object.__setattr__(self, "_wire", wire)
        return wire

    def to_dict(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "reason": self.reason,
            "matched": [m.to_dict() for m in self.matched],
            "policy_version": self.policy_version,
        }
