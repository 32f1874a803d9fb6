"""app.settings: where each of the desktop app's settings comes from, and locked settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.settings import (
    SETTINGS,
    SettingLocked,
    Source,
    resolve,
    resolve_from_qt,
    store_user_setting,
)

URL = "wss://fleet.example:8443"
NAMES = [setting.name for setting in SETTINGS]
VARIABLES = [setting.environment for setting in SETTINGS]


def test_each_source_beats_the_ones_after_it() -> None:
    sources = {
        "command_line": {"server_url": "ws://cli:1"},
        "environment": {"FLEETGATE_SERVER": "ws://env:1", "FLEETGATE_TENANT": "env-t"},
        "user": {"server_url": "ws://user:1", "tenant": "user-t", "user": "dreed"},
        "machine": {"server_url": URL, "tenant": "m-t", "user": "m-u", "theme": "high-contrast"},
    }
    resolved = resolve(**sources)
    assert (resolved["server_url"], resolved.sources["server_url"]) == (
        "ws://cli:1", Source.COMMAND_LINE)  # fmt: skip
    assert (resolved["tenant"], resolved.sources["tenant"]) == ("env-t", Source.ENVIRONMENT)
    assert (resolved["user"], resolved.sources["user"]) == ("dreed", Source.USER)
    assert (resolved["theme"], resolved.sources["theme"]) == ("high-contrast", Source.MACHINE)
    assert (resolved["work_offline"], resolved.sources["work_offline"]) == (False, Source.DEFAULT)
    assert resolved.problems == ()


def test_a_locked_machine_setting_wins_over_everything_and_cannot_be_stored() -> None:
    machine = {"server_url": URL, "locked": "server_url, tenant", "tenant": "acme"}
    resolved = resolve({"server_url": "ws://evil:1"}, {"FLEETGATE_SERVER": "ws://evil:2"},
                       {"server_url": "ws://evil:3", "user": "dreed"}, machine)  # fmt: skip
    assert (resolved["server_url"], resolved.sources["server_url"]) == (URL, Source.MACHINE)
    assert resolved.locked == {"server_url", "tenant"}
    assert not resolved.may_change("server_url") and resolved.may_change("user")
    stored: dict[str, Any] = {}
    with pytest.raises(SettingLocked, match="administrator"):
        store_user_setting(resolved, "server_url", "ws://mine:1", stored)
    assert store_user_setting(resolved, "user", " ana ", stored) == "ana"
    assert stored == {"user": "ana"}


def test_a_locked_setting_the_machine_does_not_set_keeps_its_default() -> None:
    resolved = resolve({"theme": "standard"}, {}, {}, {"locked": ["theme"]})
    assert (resolved["theme"], resolved.sources["theme"]) == ("system", Source.DEFAULT)


@pytest.mark.parametrize(
    ("source", "values", "words"),
    [
        ("user", {"server_url": "http://fleet"}, "your settings: server_url must be a ws://"),
        ("user", {"theme": "neon"}, "theme must be one of system, standard, high-contrast"),
        ("user", {"work_offline": "perhaps"}, "work_offline must be true or false"),
        ("user", {"tenant": 42}, "tenant must be non-empty text"),
        ("user", {"tenant": ["a"]}, "tenant must be non-empty text"),
        ("user", {"tenant": {"a": 1}}, "tenant must be non-empty text"),
        ("user", {"tenant": "   "}, "tenant must be non-empty text"),
        ("user", {"tenant": "ac\x00me"}, "tenant must be text a server can hold"),
        ("environment", {"FLEETGATE_TENANT": "acme\udcff"}, "FLEETGATE_TENANT must be text"),
        ("machine", {"locked": 5}, "locked must be a list of setting names"),
        ("machine", {"locked": "server_url, colour"}, "locked names no setting 'colour'"),
        ("environment", {"FLEETGATE_THEME": ""}, "environment: FLEETGATE_THEME must be"),
    ],
)
def test_a_wrong_value_in_any_source_is_named_and_the_next_source_decides(
    source: str, values: dict[str, Any], words: str
) -> None:
    sources: dict[str, Any] = {"command_line": {}, "environment": {}, "user": {},
                               "machine": {"server_url": URL, "tenant": "acme", "theme": "standard",
                                           "work_offline": "true"}}  # fmt: skip
    sources[source] = sources[source] | values
    resolved = resolve(**sources)
    assert any(words in problem for problem in resolved.problems), resolved.problems
    assert resolved["server_url"] == URL and resolved["tenant"] == "acme"
    assert resolved["theme"] == "standard" and resolved["work_offline"] is True


def test_every_setting_has_an_environment_variable_and_an_option_of_its_own() -> None:
    assert len({s.environment for s in SETTINGS}) == len(SETTINGS)
    assert len({s.option for s in SETTINGS}) == len(SETTINGS)
    assert all(s.environment.startswith("FLEETGATE_") for s in SETTINGS)


def test_qt_reads_the_machine_wide_and_the_personal_files_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QSettings

    machine, personal = tmp_path / "etc", tmp_path / "home"
    fmt = QSettings.Format.NativeFormat
    QSettings.setPath(fmt, QSettings.Scope.SystemScope, str(machine))
    QSettings.setPath(fmt, QSettings.Scope.UserScope, str(personal))
    try:
        (machine / "Fleetgate").mkdir(parents=True)
        (machine / "Fleetgate" / "Fleetgate.conf").write_text(
            f"[General]\nserver_url={URL}\ntenant=acme\nwork_offline=true\nlocked=server_url\n"
        )
        for name in ("FLEETGATE_SERVER", "FLEETGATE_TENANT", "FLEETGATE_OFFLINE"):
            monkeypatch.delenv(name, raising=False)
        resolved, user = resolve_from_qt({"server_url": "ws://cli:1"})
        assert (resolved["server_url"], resolved.sources["server_url"]) == (URL, Source.MACHINE)
        assert resolved["work_offline"] is True and resolved.locked == {"server_url"}
        store_user_setting(resolved, "tenant", "other", user)
        again, _user = resolve_from_qt({})
        assert (again["tenant"], again.sources["tenant"]) == ("other", Source.USER)
        assert "tenant=other" in (personal / "Fleetgate" / "Fleetgate.conf").read_text()
    finally:
        QSettings.setPath(fmt, QSettings.Scope.SystemScope, "/etc/xdg")
        QSettings.setPath(fmt, QSettings.Scope.UserScope, str(Path.home() / ".config"))


_ANY = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.lists(st.text(max_size=5), max_size=3)
    | st.dictionaries(st.text(max_size=4), st.integers(), max_size=2)
)


@given(
    command_line=st.dictionaries(st.sampled_from(NAMES), _ANY),
    environment=st.dictionaries(st.sampled_from(VARIABLES), st.text(max_size=12)),
    user=st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=6), _ANY),
    machine=st.dictionaries(st.sampled_from([*NAMES, "locked"]) | st.text(max_size=6), _ANY),
)
def test_any_values_in_any_source_resolve_to_values_of_the_right_kind_or_name_the_problem(
    command_line: dict[str, Any],
    environment: dict[str, str],
    user: dict[str, Any],
    machine: dict[str, Any],
) -> None:
    # Settings files are written by hand and by deployment tools: wrong types anywhere.
    resolved = resolve(command_line, environment, user, machine)
    for setting in SETTINGS:
        value = resolved[setting.name]
        assert value == setting.default or value == setting.read(value), setting.name
    assert all(isinstance(problem, str) and problem for problem in resolved.problems)
