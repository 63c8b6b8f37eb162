"""simcheck's unit-state checks catch a unit that came back different (they are the verifiers' only judge)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sim"))
import simcheck

UNITS = [f"es-{i}.service" for i in range(12)]


def show(states: dict[str, tuple[str, str]]) -> str:
    return "\n\n".join(f"Id={u}\nUnitFileState={f}\nActiveState={a}" for u, (f, a) in states.items()) + "\n"


class FakeFile:
    def __init__(self, text: str) -> None:
        self.content_string = text


class FakeHost:
    def __init__(self, recorded: str, now: str, aliases: str = "alias\nalias") -> None:
        self.recorded, self.now, self.aliases = recorded, now, aliases

    def file(self, path: str) -> FakeFile:
        return FakeFile(self.recorded)

    def check_output(self, cmd: str) -> str:
        return self.aliases if cmd.startswith("systemctl is-enabled") else self.now


def test_same_states_pass():
    states = {u: ("enabled", "active") for u in UNITS}
    assert simcheck.check_units_as_recorded(FakeHost(show(states), show(states))) == []


def test_a_changed_unit_is_named():
    before = {u: ("enabled", "active") for u in UNITS}
    after = dict(before, **{"es-3.service": ("disabled", "inactive")})
    problems = simcheck.check_units_as_recorded(FakeHost(show(before), show(after)))
    assert problems == ["es-3.service: ('enabled', 'active') before, ('disabled', 'inactive') now"]


def test_a_short_record_is_refused():
    few = {u: ("enabled", "active") for u in UNITS[:3]}
    assert "lists only 3 units" in simcheck.check_units_as_recorded(FakeHost(show(few), show(few)))[0]


def test_aliases():
    assert simcheck.check_display_manager_aliases(FakeHost("", "")) == []
    assert simcheck.check_display_manager_aliases(FakeHost("", "", aliases="masked\nalias")) != []
