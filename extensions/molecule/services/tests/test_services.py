"""After converge (warehouse_robot, keep bluetooth), an idempotent re-run and a reboot."""

from __future__ import annotations

import json

import pytest

MASKED = ["gdm.service", "packagekit.service"]
DISABLED = [
    "nvargus-daemon.service",
    "ModemManager.service",
    "avahi-daemon.service",
    "avahi-daemon.socket",
    "snapd.service",
    "snapd.socket",
    "kerneloops.service",
    "whoopsie.service",
]
STOPPED = [u for u in MASKED + DISABLED if u.endswith(".service")]


def show(host, unit):
    out = host.check_output(f"systemctl show -p UnitFileState,ActiveState {unit}")
    return dict(line.split("=", 1) for line in out.splitlines())


@pytest.mark.parametrize("unit", MASKED)
def test_masked(host, unit):
    assert show(host, unit) == {"UnitFileState": "masked", "ActiveState": "inactive"}


@pytest.mark.parametrize("unit", DISABLED)
def test_disabled(host, unit):
    assert show(host, unit) == {"UnitFileState": "disabled", "ActiveState": "inactive"}


def test_aliases_follow(host):
    assert host.check_output("systemctl is-enabled gdm3.service display-manager.service || true").split() == [
        "masked",
        "masked",
    ]


def test_kept_unit_runs(host):
    assert show(host, "bluetooth.service") == {"UnitFileState": "enabled", "ActiveState": "active"}


def test_default_target(host):
    assert host.check_output("systemctl get-default") == "multi-user.target"


def test_journal_holds_previous_states(host):
    journal = json.loads(host.file("/var/lib/edgeslim/journal.json").content_string)
    layer = journal["layers"]["services"]
    assert layer["default_target"] == "graphical.target"
    assert layer["units"]["gdm.service"]["unit_file_state"] == "static"
    assert layer["units"]["avahi-daemon.socket"]["unit_file_state"] == "enabled"
    assert all(layer["units"][u]["active_state"] == "active" for u in STOPPED)
    assert "bluetooth.service" not in layer["units"]
    assert host.file("/var/lib/edgeslim/journal.json").mode == 0o600


def test_reclaim_and_attribution(host):
    sizes = json.loads(host.file("/etc/es-sim/sizes.json").content_string)
    result = json.loads(host.file("/root/es-services-result.json").content_string)
    expected = sum(sizes[u] for u in STOPPED)
    assert result["status"] == "applied" and result["measured_by"] == "MemAvailable"
    assert abs(result["reclaimed_mb"] - expected) <= 0.05 * expected, (result["reclaimed_mb"], expected)
    assert abs(result["attributed_mb"] - expected) <= 0.01 * expected, (result["attributed_mb"], expected)
    assert set(result["details"]["attribution_mb"]) == set(STOPPED)
    for unit in STOPPED:
        assert abs(result["details"]["attribution_mb"][unit] - sizes[unit]) <= 0.05 * sizes[unit], unit
