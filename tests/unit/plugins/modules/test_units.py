"""edgeslim.jetson.units against an in-memory systemd (fake_systemd.py)."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import pytest
from ansible_collections.edgeslim.jetson.plugins.modules import units as units_module
from fake_systemd import FakeSystemd, FakeUnit, jetson_units
from modhelper import run_module

PROTECTED = ["sshd.service", "ssh.service", "NetworkManager.service", "nvgetty.service"]
WAREHOUSE = {
    "mask": ["gdm3", "packagekit", "nvargus-daemon"],
    "disable": ["avahi-daemon", "ModemManager", "bluetooth", "whoopsie", "cups", "rpcbind", "kerneloops"],
    "protected": PROTECTED,
    "default_target": "multi-user.target",
}


def run(fake: FakeSystemd, args: dict[str, Any], tmp_path, check: bool = False, diff: bool = False) -> dict:
    args = {"journal_path": str(tmp_path / "journal.json"), "verify_delay": 0, **args}
    return run_module(units_module.main, args, check=check, diff=diff, run_command=fake, bin_path="/bin/systemctl")


def journal(tmp_path) -> dict:
    return json.loads((tmp_path / "journal.json").read_text())


def test_apply_warehouse_plan_batched(tmp_path):
    fake = FakeSystemd(jetson_units())
    res = run(fake, WAREHOUSE, tmp_path)
    assert res["changed"] is True, res
    # aliases resolved, companions followed, absent reported
    assert fake.state("gdm.service") == ("masked", "inactive")
    assert fake.state("packagekit.service") == ("masked", "inactive")
    assert fake.state("avahi-daemon.service") == ("disabled", "inactive")
    assert fake.state("avahi-daemon.socket") == ("disabled", "inactive")
    assert fake.state("rpcbind.service") == ("disabled", "inactive")
    assert fake.state("rpcbind.socket") == ("disabled", "inactive")
    assert fake.state("ssh.service") == ("enabled", "active")
    assert fake.default_target == "multi-user.target"
    assert sorted(res["absent"]) == ["cups.service", "whoopsie.service"]
    assert "gdm3.service is an alias of gdm.service" in res["units"]["gdm.service"]["notes"]
    assert res["units"]["avahi-daemon.socket"]["companion_of"] == "avahi-daemon.service"
    # the PartOf= session stops with gdm, is journaled and reported for attribution, but is not disabled
    assert fake.state("gnome-session-desktop.service") == ("enabled", "inactive")
    assert "gnome-session-desktop.service" in res["stopped"]
    assert res["units"]["gnome-session-desktop.service"]["actions"] == ["stop"]
    # batched: show, show (companions + parts), get-default, active units, mask, disable, stop (parts),
    # set-default, stop jobs (none left), active units again, show, get-default
    verbs = [c[2] if c[1] == "--no-pager" else c[1] for c in fake.calls]
    assert verbs == [
        "show",
        "show",
        "get-default",
        "list-units",
        "mask",
        "disable",
        "stop",
        "set-default",
        "list-jobs",
        "list-units",
        "show",
        "get-default",
    ]
    assert res["systemctl_calls"] == 12
    assert "gdm.service" in res["stopped"] and "kerneloops.service" not in res["stopped"]


def test_journal_written_before_change_with_previous_states(tmp_path):
    fake = FakeSystemd(jetson_units())
    seen = {}

    original = fake.__call__

    def spy(argv):
        if "mask" in argv:  # first mutating call: the journal must already hold the previous states
            seen["journal"] = journal(tmp_path)
        return original(argv)

    fake_spy = mock.Mock(side_effect=spy)
    fake_spy.state = fake.state
    run(fake_spy, WAREHOUSE, tmp_path)
    layer = seen["journal"]["layers"]["services"]
    assert layer["default_target"] == "graphical.target"
    assert layer["units"]["gdm.service"]["unit_file_state"] == "static"
    assert layer["units"]["gdm.service"]["active_state"] == "active"
    assert layer["units"]["rpcbind.service"]["unit_file_state"] == "indirect"
    assert "kerneloops.service" not in layer["units"]  # already masked: nothing done, nothing to undo


def test_idempotent_second_run(tmp_path):
    fake = FakeSystemd(jetson_units())
    run(fake, WAREHOUSE, tmp_path)
    first_journal = journal(tmp_path)
    fake.calls.clear()
    res = run(fake, WAREHOUSE, tmp_path)
    assert res["changed"] is False
    verbs = [c[2] if c[1] == "--no-pager" else c[1] for c in fake.calls]
    assert verbs == ["show", "show", "get-default"]
    assert journal(tmp_path) == first_journal


def test_restore_returns_every_unit_exactly_and_clears_layer(tmp_path):
    fake = FakeSystemd(jetson_units())
    before = fake.snapshot()
    run(fake, WAREHOUSE, tmp_path)
    assert fake.snapshot() != before
    res = run(fake, {"state": "restore"}, tmp_path)
    assert res["changed"] is True and res["restored"] is True
    assert fake.snapshot() == before
    assert journal(tmp_path)["layers"] == {}
    again = run(fake, {"state": "restore"}, tmp_path)
    assert again["changed"] is False and again["restored"] is False
    assert fake.snapshot() == before


def test_restore_keeps_other_layers(tmp_path):
    (tmp_path / "journal.json").write_text(
        json.dumps({"version": 1, "layers": {"swiotlb": {"append_before": "root=/dev/x"}}})
    )
    fake = FakeSystemd(jetson_units())
    run(fake, WAREHOUSE, tmp_path)
    assert set(journal(tmp_path)["layers"]) == {"services", "swiotlb"}
    run(fake, {"state": "restore"}, tmp_path)
    assert journal(tmp_path)["layers"] == {"swiotlb": {"append_before": "root=/dev/x"}}


def test_check_mode_and_diff_change_nothing(tmp_path):
    fake = FakeSystemd(jetson_units())
    before = fake.snapshot()
    res = run(fake, WAREHOUSE, tmp_path, check=True, diff=True)
    assert res["changed"] is True
    assert fake.snapshot() == before
    assert not (tmp_path / "journal.json").exists()
    assert "gdm.service: static/active" in res["diff"]["before"]
    assert "gdm.service: masked/inactive" in res["diff"]["after"]
    assert "default.target: multi-user.target" in res["diff"]["after"]
    assert ["/bin/systemctl", "set-default", "multi-user.target"] in res["commands"]
    assert all(c[1] in ("--no-pager", "get-default") for c in fake.calls)  # read-only calls only


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"disable": ["sshd"]}, "unit sshd.service is protected"),
        ({"disable": ["gdm3"], "protected": ["display-manager"]}, "alias of protected unit display-manager.service"),
        ({"disable": ["not a unit!"]}, "invalid unit name"),
        ({"default_target": "multi-user.service"}, "default_target must be multi-user.target or graphical.target"),
    ],
)
def test_bad_input_refused_before_any_change(tmp_path, args, message):
    fake = FakeSystemd(jetson_units())
    before = fake.snapshot()
    res = run(fake, {"protected": PROTECTED, **args, "mask": [*args.get("mask", []), "gdm3"]}, tmp_path)
    assert res["failed"] is True
    assert message in res["msg"]
    assert fake.snapshot() == before
    assert not (tmp_path / "journal.json").exists()


def test_refuse_manual_stop_is_refused_before_change(tmp_path):
    fake = FakeSystemd(jetson_units(**{"bluetooth.service": {"refuse_manual_stop": True}}))
    before = fake.snapshot()
    res = run(fake, WAREHOUSE, tmp_path)
    assert res["failed"] and "refuses manual stop" in res["msg"]
    assert fake.snapshot() == before


def test_failed_stop_fails_and_restore_recovers(tmp_path):
    fake = FakeSystemd(jetson_units(**{"ModemManager.service": {"stop_fails": True}}))
    before = fake.snapshot()
    res = run(fake, WAREHOUSE, tmp_path)
    assert res["failed"] is True
    assert "Job for ModemManager.service failed" in res["msg"] and "state=restore" in res["msg"]
    assert fake.snapshot() != before  # partial change happened (masking ran first)
    fake.units["ModemManager.service"].stop_fails = False
    res = run(fake, {"state": "restore"}, tmp_path)
    assert res.get("failed") is not True, res
    assert fake.snapshot() == before


def test_unit_file_in_etc_is_disabled_not_masked(tmp_path):
    fake = FakeSystemd(
        jetson_units(**{"nvargus-daemon.service": {"fragment": "/etc/systemd/system/nvargus-daemon.service"}})
    )
    res = run(fake, WAREHOUSE, tmp_path)
    assert res["units"]["nvargus-daemon.service"]["actions"] == ["disable"]
    assert any("cannot mask" in n for n in res["units"]["nvargus-daemon.service"]["notes"])
    assert fake.state("nvargus-daemon.service") == ("disabled", "inactive")


def test_keep_wins_under_alias(tmp_path):
    fake = FakeSystemd(jetson_units())
    res = run(fake, {**WAREHOUSE, "keep": ["display-manager.service"]}, tmp_path)
    assert "gdm3.service" in res["kept"]
    assert fake.state("gdm.service") == ("static", "active")


def test_verification_catches_unit_that_comes_back(tmp_path):
    fake = FakeSystemd([FakeUnit("respawner.service")])
    original = fake._stop

    def stop_but_respawn(unit):
        original(unit)
        unit.active = "active"  # something re-started it right away

    fake._stop = stop_but_respawn
    res = run(fake, {"disable": ["respawner"]}, tmp_path)
    assert res["failed"] and "respawner.service is still active after stop" in res["msg"]


def test_older_systemd_omitting_empty_properties(tmp_path):
    fake = FakeSystemd(jetson_units(), omit_empty=True)
    res = run(fake, WAREHOUSE, tmp_path)
    assert res["changed"] and sorted(res["absent"]) == ["cups.service", "whoopsie.service"]


def test_corrupt_journal_is_not_overwritten(tmp_path):
    (tmp_path / "journal.json").write_text("{not json")
    fake = FakeSystemd(jetson_units())
    before = fake.snapshot()
    res = run(fake, WAREHOUSE, tmp_path)
    assert res["failed"] and "not valid JSON" in res["msg"]
    assert fake.snapshot() == before
    assert (tmp_path / "journal.json").read_text() == "{not json"
