"""The desktop app's settings: where each value comes from, and which ones IT has locked.

Rules of this module (the desktop issue, § Start):

- Each setting is named in `SETTINGS` with its type, default, environment
  variable and command-line option. A value comes from the first source that
  has it, in this order: the command line, the environment, the person's
  own settings, the machine-wide settings, the default.
- Machine-wide settings are Qt's system scope (`/etc/xdg/Fleetgate/Fleetgate.conf`
  on Linux, `HKLM\\Software\\Fleetgate` on Windows, managed preferences on
  macOS). Their `locked` entry lists settings the person may not change: a
  locked setting has the machine's value whatever the command line, the
  environment or the person's settings say, and `Resolved.locked` says so (the
  settings window shows it as locked and refuses to change it).
- A value of the wrong type in any source is not used: the next source
  decides, and `Resolved.problems` names the source, the setting and what was
  wrong, so a mistyped file never stops the app and never goes unnoticed.
- Resolution is pure (`resolve` over plain mappings); `qt_sources` is the only
  code that reads QSettings, so tests hand in dictionaries or point Qt at a
  temporary folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sync.policy.document import UNSTORABLE_TEXT, holds_unstorable

ORGANIZATION = "Fleetgate"
APPLICATION = "Fleetgate"


class Source(StrEnum):
    COMMAND_LINE = "command line"
    ENVIRONMENT = "environment"
    USER = "your settings"
    MACHINE = "machine-wide settings"
    DEFAULT = "default"


class Theme(StrEnum):
    SYSTEM = "system"
    """Follow the operating system's contrast preference."""
    STANDARD = "standard"
    HIGH_CONTRAST = "high-contrast"


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be non-empty text")
    if holds_unstorable(value):  # no server names a tenant so, nor answers at such an address
        raise ValueError(f"must be text a server can hold ({UNSTORABLE_TEXT})")
    return value.strip()


def _url(value: Any) -> str:
    text = _text(value)
    if not text.startswith(("ws://", "wss://")):
        raise ValueError("must be a ws:// or wss:// address")
    return text


def _theme(value: Any) -> str:
    text = _text(value).lower()
    if text not in {t.value for t in Theme}:
        raise ValueError(f"must be one of {', '.join(t.value for t in Theme)}")
    return text


def _flag(value: Any) -> bool:
    # QSettings reads INI booleans back as the strings "true" and "false".
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false", "1", "0"}:
        return value.strip().lower() in {"true", "1"}
    raise ValueError("must be true or false")


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    description: str
    default: Any
    read: Callable[[Any], Any]
    environment: str
    option: str


SETTINGS: tuple[Setting, ...] = (
    Setting("server_url", "the sync server's address", None, _url,
            "FLEETGATE_SERVER", "--server"),
    Setting("tenant", "the tenant to sign in to", None, _text, "FLEETGATE_TENANT", "--tenant"),
    Setting("user", "the user name to sign in with", None, _text, "FLEETGATE_USER", "--user"),
    Setting("replica_dir", "where the encrypted replicas are kept", None, _text,
            "FLEETGATE_REPLICA_DIR", "--replica-dir"),
    Setting("theme", "the colour theme", Theme.SYSTEM.value, _theme,
            "FLEETGATE_THEME", "--theme"),
    Setting("work_offline", "start without connecting to the server", False, _flag,
            "FLEETGATE_OFFLINE", "--offline"),
)  # fmt: skip
BY_NAME = {s.name: s for s in SETTINGS}
LOCKED_KEY = "locked"
"""The machine-wide entry listing locked settings (comma-separated names, or a list)."""


@dataclass(frozen=True, slots=True)
class Resolved:
    """Every setting's value, where it came from, and what was wrong on the way."""

    values: dict[str, Any]
    sources: dict[str, Source]
    locked: frozenset[str]
    problems: tuple[str, ...] = field(default=())

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def may_change(self, name: str) -> bool:
        """Whether the person may change `name` (False for a setting IT locked)."""
        return name not in self.locked


def locked_names(machine: Mapping[str, Any]) -> tuple[frozenset[str], list[str]]:
    """The settings the machine-wide `locked` entry names, and problems with it."""
    raw = machine.get(LOCKED_KEY)
    if raw is None:
        return frozenset(), []
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        return frozenset(), [f"{Source.MACHINE}: {LOCKED_KEY} must be a list of setting names"]
    found = {part.strip() for name in names for part in name.split(",") if part.strip()}
    unknown = sorted(found - BY_NAME.keys())
    problems = [f"{Source.MACHINE}: {LOCKED_KEY} names no setting {n!r}" for n in unknown]
    return frozenset(found & BY_NAME.keys()), problems


def resolve(
    command_line: Mapping[str, Any],
    environment: Mapping[str, str],
    user: Mapping[str, Any],
    machine: Mapping[str, Any],
) -> Resolved:
    """Each setting from the first source that has a valid value (module rules).

    `command_line` holds the options given (None or absent: not given), by
    setting name; `environment` is `os.environ`-like, read by each setting's
    variable; `user` and `machine` hold stored values by setting name.
    """
    locked, problems = locked_names(machine)
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for setting in SETTINGS:
        candidates = [
            (Source.COMMAND_LINE, command_line.get(setting.name)),
            (Source.ENVIRONMENT, environment.get(setting.environment)),
            (Source.USER, user.get(setting.name)),
            (Source.MACHINE, machine.get(setting.name)),
        ]
        if setting.name in locked:
            candidates = [c for c in candidates if c[0] is Source.MACHINE]
        values[setting.name], sources[setting.name] = setting.default, Source.DEFAULT
        for source, raw in candidates:
            if raw is None:
                continue
            try:
                values[setting.name] = setting.read(raw)
            except ValueError as wrong:
                where = setting.environment if source is Source.ENVIRONMENT else setting.name
                problems.append(f"{source}: {where} {wrong}; not used")
                continue
            sources[setting.name] = source
            break
    return Resolved(values, sources, locked, tuple(problems))


class SettingLocked(Exception):
    """The person tried to change a setting IT locked."""


def store_user_setting(resolved: Resolved, name: str, value: Any, user: Any) -> Any:
    """Check `value` for setting `name` and write it to the person's settings `user`
    (a QSettings or a dict); returns the value as stored.

    Raises SettingLocked for a locked setting, ValueError for a wrong value,
    KeyError for a setting that does not exist.
    """
    setting = BY_NAME[name]
    if not resolved.may_change(name):
        raise SettingLocked(f"{name} is set for this machine by its administrator")
    checked = setting.read(value)
    if hasattr(user, "setValue"):
        user.setValue(name, checked)
        user.sync()
    else:
        user[name] = checked
    return checked


def _as_dict(settings: Any) -> dict[str, Any]:
    return {key: settings.value(key) for key in settings.allKeys()}


def qt_sources() -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(the person's QSettings, their values, the machine-wide values), as Qt finds them.

    Imported here: the command line never pays for Qt.
    """
    from PySide6.QtCore import QSettings  # noqa: PLC0415 - module comment

    user = QSettings(
        QSettings.Format.NativeFormat, QSettings.Scope.UserScope, ORGANIZATION, APPLICATION
    )
    # A user-scope QSettings falls back to the machine's values for keys it lacks:
    # off, so that each source is read on its own and the order is this module's.
    user.setFallbacksEnabled(False)
    machine = QSettings(
        QSettings.Format.NativeFormat, QSettings.Scope.SystemScope, ORGANIZATION, APPLICATION
    )
    return user, _as_dict(user), _as_dict(machine)


def resolve_from_qt(command_line: Mapping[str, Any]) -> tuple[Resolved, Any]:
    """The settings as the app starts with them, and the person's QSettings to store into."""
    user, user_values, machine_values = qt_sources()
    return resolve(command_line, os.environ, user_values, machine_values), user
