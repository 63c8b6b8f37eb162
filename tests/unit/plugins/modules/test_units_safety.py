"""edgeslim.jetson.units: the rules no caller or profile can switch off (core set, targets, dependencies, journal)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ansible_collections.edgeslim.jetson.plugins.modules import units as units_module
from fake_systemd import FakeSystemd, FakeUnit, jetson_units
from modhelper import run_module


def run(fake: FakeSystemd, args: dict[str, Any], tmp_path, check: bool = False) -> dict:
    args = {"journal_path": str(tmp_path / "journal.json"), "verify_delay": 0, **args}
    return run_module(units_module.main, args, check=check, run_command=fake, bin_path="/bin/systemctl")


def core_host(**overrides: Any) -> FakeSystemd:
    """jetson_units plus the core units, wired as on Debian 12 / Ubuntu: dbus.service Requires=dbus.socket;
    logind BindsTo the bus here so that a stop of the socket reaches it; polkit/ModemManager/avahi Requires=dbus."""
    units = [
        *jetson_units(**overrides),
        FakeUnit("dbus.socket", required_by=("dbus.service",)),
        FakeUnit(
            "dbus.service",
            "static",
            triggered_by=("dbus.socket",),
            required_by=("polkit.service", "ModemManager.service", "avahi-daemon.service"),
            bound_by=("systemd-logind.service",),
        ),
        FakeUnit("systemd-logind.service", "static"),
        FakeUnit("polkit.service", "static"),
        FakeUnit("systemd-journald.service", "static"),
        FakeUnit("systemd-journald-dev-log.socket", "static", required_by=("systemd-journald.service",)),
        FakeUnit("nv-l4t-bootloader-config.service"),
        FakeUnit("l4t-rootfs-validation-config.service"),
        FakeUnit("serial-getty@ttyTCU0.service"),
        FakeUnit("getty@tty1.service"),
        FakeUnit("ssh.socket", active="inactive", file_state="disabled"),
    ]
    return FakeSystemd(units)


def refused(fake: FakeSystemd, args: dict[str, Any], tmp_path, message: str) -> dict:
    before = fake.snapshot()
    res = run(fake, args, tmp_path)
    assert res.get("failed") is True, res
    assert message in res["msg"], res["msg"]
    assert fake.snapshot() == before
    assert not (tmp_path / "journal.json").exists()
    assert all(c[1] in ("--no-pager", "get-default") for c in fake.calls)  # read-only calls only
    return res


@pytest.mark.parametrize(
    "unit",
    [
        "ssh",
        "sshd.service",
        "ssh.socket",
        "dbus.service",
        "dbus.socket",
        "systemd-journald",
        "systemd-journald-dev-log.socket",
        "systemd-logind",
        "nv-l4t-bootloader-config",
        "l4t-rootfs-validation-config",
        "nvgetty",
        "serial-getty@ttyTCU0.service",
        "getty@tty1.service",
    ],
)
@pytest.mark.parametrize("verb", ["disable", "mask"])
def test_core_set_refused_without_protected(tmp_path, unit, verb):
    res = refused(core_host(), {verb: [unit], "protected": []}, tmp_path, "core set, cannot be unprotected")
    assert "is protected" in res["msg"]


def test_core_set_refused_when_protected_omitted_and_under_an_alias(tmp_path):
    fake = FakeSystemd([FakeUnit("dbus-broker.service", aliases=("dbus.service",))])
    refused(fake, {"disable": ["dbus-broker"]}, tmp_path, "alias of protected unit dbus.service")


@pytest.mark.parametrize(
    "target", ["rescue.target", "emergency.target", "poweroff.target", "reboot.target", "default.target", "halt"]
)
def test_default_target_only_multi_user_or_graphical(tmp_path, target):
    refused(core_host(), {"default_target": target}, tmp_path, "default_target must be multi-user.target or")


def test_allowed_default_targets_still_work(tmp_path):
    fake = core_host()
    res = run(fake, {"default_target": "multi-user.target"}, tmp_path)
    assert res["changed"] and fake.default_target == "multi-user.target"


@pytest.mark.parametrize(
    ("iface", "unit"),
    [
        ("wwp0s20f0u6i12", "ModemManager"),  # predictable WWAN name
        ("wwan0", "ModemManager"),
        ("wlan0", "NetworkManager"),
        ("eth0", "NetworkManager"),
        ("l4tbr0", "nv-l4t-usb-device-mode"),
    ],
)
def test_unit_carrying_the_management_link_refused(tmp_path, iface, unit):
    fake = FakeSystemd([*jetson_units(), FakeUnit("nv-l4t-usb-device-mode.service")])
    res = refused(
        fake, {"disable": [unit], "management_interface": iface}, tmp_path, f"carries the management link on {iface}"
    )
    assert "core set" in res["msg"]


def test_modemmanager_allowed_when_the_link_is_ethernet(tmp_path):
    fake = FakeSystemd(jetson_units())
    res = run(fake, {"disable": ["ModemManager"], "management_interface": "eth0"}, tmp_path)
    assert res["changed"] and fake.state("ModemManager.service") == ("disabled", "inactive")


def test_dependency_on_a_protected_unit_refused(tmp_path):
    # ssh BindsTo= a helper: stopping the helper would take ssh down with it
    fake = FakeSystemd([*jetson_units(), FakeUnit("net-helper.service", bound_by=("ssh.service",))])
    res = refused(fake, {"disable": ["net-helper"]}, tmp_path, "would also stop protected unit ssh.service")
    assert "(BindsTo= net-helper.service)" in res["msg"]


def test_transitive_dependency_on_a_user_protected_unit_refused(tmp_path):
    fake = FakeSystemd(
        [
            *jetson_units(),
            FakeUnit("a.socket", required_by=("a.service",)),
            FakeUnit("a.service", requisite_of=("telemetry.service",)),
            FakeUnit("telemetry.service"),
        ]
    )
    refused(
        fake,
        {"disable": ["a.socket"], "protected": ["telemetry.service"]},
        tmp_path,
        "stopping a.service would also stop protected unit telemetry.service (Requisite= a.service)",
    )


def test_dependency_on_a_kept_unit_refused(tmp_path):
    fake = FakeSystemd([*jetson_units(), FakeUnit("a.service", required_by=("app.service",)), FakeUnit("app.service")])
    refused(fake, {"disable": ["a"], "keep": ["app"]}, tmp_path, "would also stop kept unit app.service")


def test_dbus_socket_block_refused_before_anything_stops(tmp_path):
    fake = core_host()
    res = refused(fake, {"mask": ["dbus.socket"], "protected": []}, tmp_path, "unit dbus.socket is protected")
    # the dependency walk names what would have gone down with it
    assert "would also stop protected unit dbus.service" in res["msg"]
    assert "would also stop protected unit systemd-logind.service" in res["msg"]


def test_units_stopping_with_the_plan_are_journaled_restored_and_not_attributed(tmp_path):
    fake = FakeSystemd(
        [
            *jetson_units(),
            FakeUnit("cups.socket", required_by=("cups.service",)),
            FakeUnit("cups.service", triggered_by=("cups.socket",), bound_by=("cups-browsed.service",)),
            FakeUnit("cups-browsed.service"),
        ]
    )
    before = fake.snapshot()
    res = run(fake, {"disable": ["cups.socket"]}, tmp_path)
    assert res["changed"], res
    assert res["stopped"] == ["cups.socket"]
    assert res["stopped_with"] == {
        "cups.service": {"by": "cups.socket", "via": "Requires="},
        "cups-browsed.service": {"by": "cups.service", "via": "BindsTo="},
    }
    assert fake.state("cups-browsed.service") == ("enabled", "inactive")
    layer = json.loads((tmp_path / "journal.json").read_text())["layers"]["services"]
    assert layer["units"]["cups-browsed.service"]["action"] == "stop"
    assert layer["units"]["cups-browsed.service"]["via"] == "BindsTo="
    res = run(fake, {"state": "restore"}, tmp_path)
    assert res.get("failed") is not True, res
    assert fake.snapshot() == before


@pytest.mark.parametrize("damage", ["empty", "half"])
def test_damaged_journal_refused_on_apply(tmp_path, damage):
    fake = FakeSystemd(jetson_units())
    run(fake, {"disable": ["bluetooth"]}, tmp_path)
    path = tmp_path / "journal.json"
    text = path.read_text()
    path.write_text("" if damage == "empty" else text[: len(text) // 2])
    damaged = path.read_text()
    before = fake.snapshot()
    res = run(fake, {"disable": ["avahi-daemon"]}, tmp_path)
    assert res["failed"] and "nothing changed" in res["msg"] and str(path) in res["msg"]
    assert "journal.json.prev" in res["msg"] and "docs/journal.md" in res["msg"]
    assert fake.snapshot() == before and path.read_text() == damaged


def test_restore_from_the_copy_when_the_journal_is_truncated(tmp_path):
    fake = FakeSystemd(jetson_units())
    before = fake.snapshot()
    run(fake, {"mask": ["gdm3"], "disable": ["avahi-daemon"], "default_target": "multi-user.target"}, tmp_path)
    path = tmp_path / "journal.json"
    path.write_text(path.read_text()[: len(path.read_text()) // 2])
    res = run(fake, {"state": "restore"}, tmp_path)
    assert res.get("failed") is not True, res
    assert res["restored"] is True and "journal.json.prev" in res["journal_warning"]
    assert fake.snapshot() == before
    assert json.loads(path.read_text())["layers"] == {}
    assert (tmp_path / "journal.json.corrupt").exists()
    assert "journal.json.prev" in json.dumps(res.get("warnings", res.get("journal_warning")))
