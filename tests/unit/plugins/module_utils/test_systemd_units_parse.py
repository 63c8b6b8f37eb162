"""systemd_units: parsing `systemctl show`, names, plans and restore plans (pure functions)."""

from __future__ import annotations

import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import systemd_units as su
from conftest import FIXTURES

FIX = FIXTURES / "units"
ORIN_REQUEST = [
    "gdm3.service",
    "display-manager.service",
    "avahi-daemon.service",
    "packagekit.service",
    "nvargus-daemon.service",
    "whoopsie.service",
    "cups.service",
    "ModemManager.service",
]


def orin_states():
    return su.match_states(ORIN_REQUEST, su.parse_show((FIX / "orin_show.txt").read_text()))


def test_parse_real_shape_and_aliases():
    states = orin_states()
    assert states["gdm3.service"].id == "gdm.service"
    assert states["display-manager.service"].id == "gdm.service"
    assert states["gdm3.service"].unit_file_state == "static" and states["gdm3.service"].running
    assert states["avahi-daemon.service"].triggered_by == ["avahi-daemon.socket"]
    assert not states["whoopsie.service"].exists
    assert states["ModemManager.service"].enabled


def test_parse_omitted_empty_properties():
    states = su.match_states(
        ["bluetooth.service", "kerneloops.service"], su.parse_show((FIX / "orin_show_omitted_empty.txt").read_text())
    )
    assert states["bluetooth.service"].triggered_by == []
    assert states["kerneloops.service"].masked and not states["kerneloops.service"].running


def test_truncated_output_is_an_error():
    with pytest.raises(su.UnitsError, match="returned 4 unit blocks for 8 units"):
        su.match_states(ORIN_REQUEST, su.parse_show((FIX / "truncated_show.txt").read_text()))


def test_garbage_output_is_an_error():
    with pytest.raises(su.UnitsError, match="unexpected line"):
        su.parse_show((FIX / "garbage_show.txt").read_text())


def test_block_for_another_unit_is_an_error():
    with pytest.raises(su.UnitsError, match=r"answered 'gdm\.service'"):
        su.match_states(["bluetooth.service"], su.parse_show("Id=gdm.service\nNames=gdm.service\nLoadState=loaded\n"))


@pytest.mark.parametrize(
    ("name", "expected"),
    [("gdm3", "gdm3.service"), ("avahi-daemon.socket", "avahi-daemon.socket"), ("serial-getty@ttyGS0", None)],
)
def test_normalize(name, expected):
    assert su.normalize_unit(name) == (expected or "serial-getty@ttyGS0.service")


@pytest.mark.parametrize("bad", ["", "  ", "a b", "rm -rf /", "-x.service", 3, None, "x" * 300])
def test_normalize_rejects(bad):
    with pytest.raises(su.UnitsError):
        su.normalize_unit(bad)


def test_normalize_units_type_error():
    with pytest.raises(su.UnitsError, match="must be a list"):
        su.normalize_units("gdm3", "mask")


def test_show_argv_is_one_call():
    argv = su.show_argv("/bin/systemctl", ["a.service", "b.socket"])
    assert argv[:3] == ["/bin/systemctl", "--no-pager", "show"]
    assert argv[-3:] == ["--", "a.service", "b.socket"]


def test_plan_collapses_aliases_and_reports_absent():
    states = orin_states()
    plan = su.compute_plan(
        states,
        disable=["avahi-daemon.service", "whoopsie.service", "cups.service", "ModemManager.service"],
        mask=["gdm3.service", "display-manager.service", "packagekit.service", "nvargus-daemon.service"],
        keep=[],
        protected=["ssh.service"],
        default_target_before="graphical.target",
        default_target="multi-user.target",
    )
    assert not plan.errors
    by = {u.unit: u for u in plan.units}
    assert by["gdm.service"].requested == ["gdm3.service", "display-manager.service"]
    assert by["gdm.service"].actions == ["mask"]
    assert by["packagekit.service"].actions == ["mask"]
    # nvargus' unit file is in /etc/systemd/system in this fixture: mask would fail, so it is disabled
    assert by["nvargus-daemon.service"].actions == ["disable"]
    assert plan.absent == ["whoopsie.service", "cups.service"]
    assert plan.commands("systemctl") == [
        ["systemctl", "mask", "--now", "--no-block", "--", "gdm.service", "packagekit.service"],
        [
            "systemctl",
            "disable",
            "--now",
            "--no-block",
            "--",
            "nvargus-daemon.service",
            "avahi-daemon.service",
            "ModemManager.service",
        ],
        ["systemctl", "set-default", "multi-user.target"],
    ]


def test_static_unit_in_disable_list_is_stopped_with_note():
    states = orin_states()
    plan = su.compute_plan(states, ["packagekit.service"], [], [], [], "graphical.target", None)
    unit = plan.units[0]
    assert unit.actions == ["stop"]
    assert "mask it" in unit.notes[0]
    assert plan.commands("systemctl") == [["systemctl", "stop", "--no-block", "--", "packagekit.service"]]


def test_protected_alias_refused():
    states = orin_states()
    plan = su.compute_plan(states, [], ["display-manager.service"], [], ["gdm.service"], "graphical.target", None)
    assert plan.errors and "alias of protected unit gdm.service" in plan.errors[0]


def test_protected_pattern_refuses_every_matching_name():
    states = orin_states()
    plan = su.compute_plan(states, [], ["display-manager.service"], [], ["gd?.service"], "graphical.target", None)
    assert plan.errors and "alias of protected unit gd?.service" in plan.errors[0]
    errors = su.validate_request(["serial-getty@ttyUTC0.service"], [], ["serial-getty@*.service"], None)
    assert errors == [
        "unit serial-getty@ttyUTC0.service is protected (by serial-getty@*.service) and must not be stopped, "
        "disabled or masked"
    ]
    assert su.validate_request(["getty@tty1.service"], [], ["serial-getty@*.service"], None) == []


def test_protected_names_and_patterns_are_normalized():
    assert su.normalize_protected(["nvgetty", "serial-getty@*", "sshd.service"]) == [
        "nvgetty.service",
        "serial-getty@*.service",
        "sshd.service",
    ]
    for bad in (["a b"], ["-x"], [""], "ssh"):
        with pytest.raises(su.UnitsError):
            su.normalize_protected(bad)
    with pytest.raises(su.UnitsError):
        su.normalize_units(["serial-getty@*"], "disable")  # a pattern is only a protection, never a target


def test_restore_plan_orders_unmask_before_start():
    states = su.match_states(
        ["gdm.service"],
        su.parse_show(
            "Id=gdm.service\nNames=gdm.service\nLoadState=masked\nActiveState=inactive\nUnitFileState=masked\n"
        ),
    )
    layer = {
        "default_target": "graphical.target",
        "units": {"gdm.service": {"unit_file_state": "static", "active_state": "active", "load_state": "loaded"}},
    }
    rplan = su.compute_restore(layer, states, "multi-user.target")
    assert rplan.commands("systemctl") == [
        ["systemctl", "unmask", "--", "gdm.service"],
        ["systemctl", "set-default", "graphical.target"],
        ["systemctl", "start", "--", "gdm.service"],
    ]


def test_merge_layer_first_record_wins():
    states = orin_states()
    plan = su.compute_plan(states, [], ["gdm3.service"], [], [], "graphical.target", "multi-user.target")
    layer = su.merge_layer(None, plan, "t1")
    assert layer["units"]["gdm.service"]["active_state"] == "active"
    assert layer["default_target"] == "graphical.target"
    # a later plan that sees the slimmed state must not overwrite the record
    plan.units[0].before = {"unit_file_state": "masked", "active_state": "inactive", "load_state": "masked"}
    plan.default_target_before = "multi-user.target"
    again = su.merge_layer(layer, plan, "t2")
    assert again["units"]["gdm.service"]["active_state"] == "active"
    assert again["default_target"] == "graphical.target"
    assert again["created"] == "t1" and again["updated"] == "t2"


def test_real_capture_systemd_252():
    requested = [
        "gdm3.service",
        "display-manager.service",
        "es-sim-04.service",
        "es-sim-04.socket",
        "es-sim-05.service",
        "nosuch.service",
        "refuser.service",
    ]
    states = su.match_states(requested, su.parse_show((FIX / "debian12_show.txt").read_text()))
    assert states["display-manager.service"].id == "gdm.service"
    assert "gdm3.service" in states["gdm3.service"].names
    assert states["es-sim-04.service"].triggered_by == ["es-sim-04.socket"]
    assert states["es-sim-05.service"].unit_file_state == "static"
    assert not states["nosuch.service"].exists
    plan = su.compute_plan(states, ["refuser.service"], [], [], [], "graphical.target", None)
    assert "refuses manual stop" in plan.errors[0]
