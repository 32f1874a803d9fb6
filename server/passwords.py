r"""What a new password must be, after NIST SP 800-63B (section 5.1.1.2,
"Memorized Secret Verifiers"): long enough, not commonly used, not built from
words of its context, and not a trivial pattern. Nothing else: NIST forbids
composition rules (digits, capitals, symbols), and so do we.

Rules of this module:

- Every place that sets a password (a tenant's first admin, `fleetgate admin
  set-password`, enrollment with an invitation code, a reset over the
  protocol) calls `check_new_password`; checking is all it does. Signing in
  never calls it: a password set before a rule existed still signs in.
- Lengths are Unicode code points after NFC normalization, so "é" counts as
  one character whether it was typed composed or as "e" and a combining accent.
  Comparisons (list, context words) use NFC and then `str.casefold`.
- The rules are checked in this order and the first one broken is reported:
  length (`too_short`, `too_long`), a single repeated character or a run of
  consecutive letters or digits (`repetitive`), built from context words
  (`context`), the list of common passwords (`common`). The specific reasons
  come before the list's, because they tell the person more.
- A message depends only on the rule and the password's length: never on the
  password's text, which appears in no message and no repr.

The list of common passwords, `server/common-passwords.txt.gz`:

- Source: `django/contrib/auth/common-passwords.txt.gz` from the Django 5.2.19
  wheel on PyPI, 19,640 passwords that Django describes as "created by Royce
  Williams" (https://gist.github.com/roycewilliams/226886fd01572964e1431ac8afc999ce),
  lowercased and deduplicated. Django ships it under its BSD-3-Clause licence,
  "Copyright (c) Django Software Foundation and individual contributors"; the
  licence's text is at the end of this file, as its first condition asks.
- Filtered: each entry NFC-normalized and casefolded like a password is, and
  only the entries of 12 or more characters kept (190 of them), because a
  shorter one could only match a password that `too_short` already refuses
  (casefolding never shortens a string). One entry a line, UTF-8, sorted,
  gzipped with no timestamp so that regenerating it gives the same bytes.
- Regenerate it, from the repository's root, with:

      .venv/bin/pip download django==5.2.19 --no-deps -d /tmp/dj
      .venv/bin/python - /tmp/dj/django-5.2.19-py3-none-any.whl \
          server/common-passwords.txt.gz <<'EOF'
      import gzip, sys, unicodedata, zipfile
      wheel, out = sys.argv[1:]
      raw = zipfile.ZipFile(wheel).read("django/contrib/auth/common-passwords.txt.gz")
      lines = gzip.decompress(raw).decode("utf-8").splitlines()
      folded = {unicodedata.normalize("NFC", line.strip()).casefold() for line in lines}
      kept = sorted(word for word in folded if len(word) >= 12)
      with open(out, "wb") as f:
          f.write(gzip.compress("".join(word + "\n" for word in kept).encode("utf-8"), mtime=0))
      EOF
"""

from __future__ import annotations

import functools
import gzip
import unicodedata
from collections.abc import Collection
from enum import StrEnum
from importlib import resources
from itertools import pairwise

MIN_LENGTH = 12
"""Fewest characters in a new password (NIST asks for at least 8; we ask for more)."""
MAX_LENGTH = 1024
"""Most characters in a new password (NIST: allow at least 64)."""

PRODUCT_NAME = "fleetgate"
"""The service's name: a context word for every tenant (NIST 5.1.1.2)."""

_COMMON_PASSWORDS = "common-passwords.txt.gz"


class PasswordRule(StrEnum):
    """The rule a refused password breaks; the values are stable codes."""

    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    REPETITIVE = "repetitive"
    CONTEXT = "context"
    COMMON = "common"


class PasswordRejected(ValueError):
    """The password breaks a rule; str() says which, in words for the person
    choosing it (never the password itself). `rule` is its stable code."""

    def __init__(self, rule: PasswordRule, message: str) -> None:
        super().__init__(message)
        self.rule = rule


def check_new_password(password: str, *, user: str, tenant: str) -> None:
    """Return if `password` may be set for `user` (the user id) of `tenant`
    (the tenant's name); otherwise raise PasswordRejected naming the first rule
    it breaks, in the order of this module's rules."""
    composed = unicodedata.normalize("NFC", password)
    length = len(composed)
    if length < MIN_LENGTH:
        raise PasswordRejected(
            PasswordRule.TOO_SHORT,
            f"a password needs at least {MIN_LENGTH} characters (this one has {length})",
        )
    if length > MAX_LENGTH:
        raise PasswordRejected(
            PasswordRule.TOO_LONG,
            f"a password may have at most {MAX_LENGTH:,} characters (this one has {length:,})",
        )
    folded = composed.casefold()
    if _is_one_character_or_run(folded):
        raise PasswordRejected(
            PasswordRule.REPETITIVE,
            "a password must not be one character repeated"
            " or a run of consecutive letters or digits",
        )
    words = {_fold(word) for word in (user, tenant, PRODUCT_NAME)} - {""}
    if _is_built_from(folded, words):
        raise PasswordRejected(
            PasswordRule.CONTEXT,
            f"a password must not be built from the user name, the tenant name or {PRODUCT_NAME!r}",
        )
    if folded in common_passwords():
        raise PasswordRejected(
            PasswordRule.COMMON,
            "this password is in a list of commonly used passwords; choose another",
        )


@functools.cache
def common_passwords() -> frozenset[str]:
    """The bundled list of common passwords (see the module's docstring), each
    NFC-normalized and casefolded, read from the package's data on first use."""
    data = (resources.files("server") / _COMMON_PASSWORDS).read_bytes()
    return frozenset(gzip.decompress(data).decode("utf-8").splitlines())


def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


def _is_one_character_or_run(folded: str) -> bool:
    # "aaaaaaaaaaaa", "123456789012", "abcdefghijkl", "zyxwvutsrqpo": NIST's
    # "repetitive or sequential characters". Runs may wrap (9 to 0, z to a) and
    # go either way, one step at a time; only ASCII digits and letters make runs.
    if len(set(folded)) == 1:
        return True
    if folded.isascii() and folded.isdigit():
        values, modulus = [ord(c) - ord("0") for c in folded], 10
    elif folded.isascii() and folded.isalpha():
        values, modulus = [ord(c) - ord("a") for c in folded], 26
    else:
        return False
    step = (values[1] - values[0]) % modulus
    return step in (1, modulus - 1) and all((b - a) % modulus == step for a, b in pairwise(values))


def _is_built_from(folded: str, words: Collection[str]) -> bool:
    # True when the password is one or more context words end to end
    # ("alicealice", "acmefleetgate"), followed by nothing but characters that
    # are not letters ("fleetgate2026!!", "alice 1"). A password that goes on
    # with letters ("fleetgate-demo") is not built from them. Positions
    # reachable by whole words are walked once each: no regular expression, so
    # overlapping words ("a", "aa") cannot make it backtrack.
    letters_end = next((i + 1 for i in range(len(folded) - 1, -1, -1) if folded[i].isalpha()), 0)
    reachable = [False] * (len(folded) + 1)
    reachable[0] = True
    for start in range(len(folded)):
        if not reachable[start]:
            continue
        for word in words:
            if folded.startswith(word, start):
                end = start + len(word)
                if end >= letters_end:
                    return True
                reachable[end] = True
    return False


# Django's licence, which covers server/common-passwords.txt.gz:
#
# Copyright (c) Django Software Foundation and individual contributors.
# All rights reserved.
#
# Redistribution and use in source and binary forms, with or without modification,
# are permitted provided that the following conditions are met:
#
#     1. Redistributions of source code must retain the above copyright notice,
#        this list of conditions and the following disclaimer.
#
#     2. Redistributions in binary form must reproduce the above copyright
#        notice, this list of conditions and the following disclaimer in the
#        documentation and/or other materials provided with the distribution.
#
#     3. Neither the name of Django nor the names of its contributors may be used
#        to endorse or promote products derived from this software without
#        specific prior written permission.
#
# THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND
# ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED
# WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
# DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT OWNER OR CONTRIBUTORS BE LIABLE FOR
# ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES
# (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES;
# LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON
# ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT
# (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE OF THIS
# SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
