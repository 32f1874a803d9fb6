"""Sealed secrets (server/sealing.py): AES-256-GCM under a key derived from the server's."""

from __future__ import annotations

import pytest

from server.sealing import SecretBox, SecretUnreadable

KEY = b"k" * 32


def test_a_sealed_secret_opens_with_the_same_key_and_context() -> None:
    box = SecretBox(KEY)
    sealed = box.seal("s3cret", "t:1")
    assert "s3cret" not in sealed
    assert SecretBox(KEY).open(sealed, "t:1") == "s3cret"
    assert box.seal("s3cret", "t:1") != sealed  # a fresh nonce each time


@pytest.mark.parametrize(
    ("key", "context", "change"),
    [(b"x" * 32, "t:1", False), (KEY, "t:2", False), (KEY, "t:1", True)],
    ids=["another key", "another context", "altered"],
)
def test_a_sealed_secret_does_not_open_otherwise(key: bytes, context: str, change: bool) -> None:
    sealed = SecretBox(KEY).seal("s3cret", "t:1")
    if change:
        sealed = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(SecretUnreadable):
        SecretBox(key).open(sealed, context)


@pytest.mark.parametrize("garbage", ["", "plain-secret", "fgs1:", "fgs1:!!!", "fgs1:AAAA"])
def test_garbage_is_unreadable_not_a_crash(garbage: str) -> None:
    with pytest.raises(SecretUnreadable):
        SecretBox(KEY).open(garbage, "t:1")


def test_a_short_key_is_refused_and_the_box_keeps_it_out_of_repr() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SecretBox(b"short")
    assert "k" * 8 not in repr(SecretBox(KEY))
