"""Parsers for the batch's before/after comparison and its bounded stop (list-units, list-jobs, a failed unit)."""

from __future__ import annotations

from ansible_collections.edgeslim.jetson.plugins.module_utils import systemd_units as su
from conftest import FIXTURES

FIX = FIXTURES / "units"


def test_list_units_names_including_marked_and_templated():
    names = su.parse_list_units((FIX / "list_units_active.txt").read_text())
    assert names == [
        "avahi-daemon.service",
        "dbus.service",
        "es-dep-server.service",
        "es-dep-client.service",
        "serial-getty@ttyTCU0.service",
        "avahi-daemon.socket",
        "dbus.socket",
        "es-marked.service",
    ]


def test_list_units_ignores_non_unit_lines():
    assert su.parse_list_units("0 loaded units listed.\n\nerror: something\n") == []


def test_list_jobs_columns_and_no_jobs_text():
    assert su.parse_list_jobs((FIX / "list_jobs.txt").read_text()) == [
        ("es-stubborn.service", "stop", "running"),
        ("es-dep-client.service", "stop", "waiting"),
        ("es-respawn.service", "start", "waiting"),
    ]
    assert su.parse_list_jobs((FIX / "list_jobs_none.txt").read_text()) == []
    assert su.parse_list_jobs("") == []


def test_failed_after_stop_is_not_running_and_observed_record_restarts_it():
    state = su.match_states(["es-stubborn.service"], su.parse_show((FIX / "failed_after_stop_show.txt").read_text()))[
        "es-stubborn.service"
    ]
    assert state.active_state == "failed" and not state.running
    rec = su.observed_record(state)
    assert rec["active_state"] == "active" and rec["via"] == su.OBSERVED_VIA
    plan = su.compute_restore({"units": {"es-stubborn.service": rec}}, {"es-stubborn.service": state}, None)
    assert plan.units[0]["actions"] == ["start"] and plan.units[0]["dependency"] is True


def test_restore_starts_dependencies_after_the_units_they_need():
    states = su.match_states(
        ["a.service", "b.service", "a.socket"],
        su.parse_show(
            "".join(
                f"Id={n}\nNames={n}\nLoadState=loaded\nActiveState=inactive\nSubState=dead\nUnitFileState={f}\n\n"
                for n, f in (("a.service", "disabled"), ("b.service", "enabled"), ("a.socket", "disabled"))
            )
        ),
    )
    layer = {
        "units": {
            "b.service": {"unit_file_state": "enabled", "active_state": "active", "via": "Requires="},
            "a.service": {"unit_file_state": "enabled", "active_state": "active", "via": None},
            "a.socket": {"unit_file_state": "enabled", "active_state": "active", "via": None},
        }
    }
    cmds = su.compute_restore(layer, states, None).commands("systemctl")
    assert cmds == [
        ["systemctl", "enable", "--", "a.service", "a.socket"],
        ["systemctl", "start", "--", "a.socket"],
        ["systemctl", "start", "--", "a.service"],
        ["systemctl", "start", "--", "b.service"],
    ]
