"""The command line's two kinds of failure, shared by its modules."""

from __future__ import annotations


class BadInput(Exception):
    """Input we cannot use; the message says what and where (exit status 2)."""


class Failed(Exception):
    """The command could not finish for a reason other than its input (exit status 70)."""
