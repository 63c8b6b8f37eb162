"""After converge (warehouse_robot, keep bluetooth) on the simulated Orin Nano, an idempotent re-run and a reboot.

Expected states come from profiles/ (warehouse_robot) applied to tests/sim/image/services.yml; sizes from the same
inventory x the scale the container runs with (/etc/edgeslim-sim/scale)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[4]
INVENTORY = {u["name"]: u for u in yaml.safe_load((ROOT / "tests/sim/image/services.yml").read_text())["units"]}

MASKED = ["gdm.service", "colord.service", "rtkit-daemon.service", "packagekit.service"]
DISABLED = [
    "accounts-daemon.service",
    "power-profiles-daemon.service",
    "switcheroo-control.service",
    "udisks2.service",
    "nvargus-daemon.service",
    "avahi-daemon.service",
    "avahi-daemon.socket",
    "ModemManager.service",
    "rpcbind.service",
    "rpcbind.socket",
    "cups.service",
    "cups.socket",
    "cups.path",
    "snapd.service",
    "snapd.socket",
    "whoopsie.service",
    "kerneloops.service",
    "unattended-upgrades.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
]
PARTS = ["gnome-session-desktop.service", "gnome-software.service"]  # PartOf=gdm: stopped with it, not disabled
UNTOUCHED = [  # protected or in no warehouse_robot block
    "NetworkManager.service",
    "nvgetty.service",
    "nvfancontrol.service",
    "nv-l4t-usb-device-mode.service",
    "nvidia-pva-allowd.service",
    "nvs-service.service",
    "nvphs.service",
    "pulseaudio-system.service",
]
STOPPED_SERVICES = [u for u in MASKED + DISABLED + PARTS if u.endswith(".service")]


def show(host, unit):
    out = host.check_output(f"systemctl show -p UnitFileState,ActiveState {unit}")
    return dict(line.split("=", 1) for line in out.splitlines())


@pytest.mark.parametrize("unit", MASKED)
def test_masked(host, unit):
    assert show(host, unit) == {"UnitFileState": "masked", "ActiveState": "inactive"}


@pytest.mark.parametrize("unit", DISABLED)
def test_disabled(host, unit):
    assert show(host, unit) == {"UnitFileState": "disabled", "ActiveState": "inactive"}


@pytest.mark.parametrize("unit", PARTS)
def test_parts_stopped_not_disabled(host, unit):
    assert show(host, unit) == {"UnitFileState": "enabled", "ActiveState": "inactive"}


@pytest.mark.parametrize("unit", [*UNTOUCHED, "bluetooth.service"])
def test_untouched_and_kept_units_run(host, unit):
    assert show(host, unit)["ActiveState"] == "active"
    assert show(host, unit)["UnitFileState"] == "enabled"


def test_alias_follows(host):
    assert host.run("systemctl is-enabled gdm3.service").stdout.strip() == "masked"


def test_default_target(host):
    assert host.check_output("systemctl get-default") == "multi-user.target"


def test_journal_holds_previous_states(host):
    f = host.file("/var/lib/edgeslim/journal.json")
    assert f.mode == 0o600
    layer = json.loads(f.content_string)["layers"]["services"]
    assert layer["default_target"] == "graphical.target"
    assert layer["units"]["gdm.service"]["unit_file_state"] == "static"
    assert layer["units"]["gdm.service"]["requested"] == ["gdm.service", "gdm3.service"]
    assert layer["units"]["avahi-daemon.socket"]["block"] == "lean_network"
    assert layer["units"]["gnome-session-desktop.service"]["action"] == "stop"
    assert all(layer["units"][u]["active_state"] == "active" for u in STOPPED_SERVICES)
    assert "bluetooth.service" not in layer["units"]


def test_reclaim_and_attribution(host):
    scale = float(host.file("/etc/edgeslim-sim/scale").content_string.strip())
    measured = json.loads(host.file("/root/es-pre-memory.json").content_string)  # independent, before converge
    result = json.loads(host.file("/root/es-services-result.json").content_string)
    attributed = result["details"]["attribution_mb"]
    assert result["status"] == "applied" and result["measured_by"] == "MemAvailable"
    sim = [u for u in STOPPED_SERVICES if INVENTORY.get(u, {}).get("kind") == "sim"]
    real = [u for u in STOPPED_SERVICES if INVENTORY.get(u, {}).get("kind") == "debian"]
    assert set(attributed) == set(sim + real)
    # the simulation holds what it claims: PSS = size x scale, plus ~0.1 MB of process overhead per daemon
    for unit in sim:
        size_mb = INVENTORY[unit]["size_mib"] * scale
        assert size_mb <= measured[unit]["pss_kb"] / 1024 <= size_mb + 0.25, unit
    # attribution: within 1 % of the PSS measured independently before the change (total and per unit)
    independent = sum(measured[u]["pss_kb"] for u in sim + real) / 1024
    assert abs(result["attributed_mb"] - independent) <= 0.01 * independent, (result["attributed_mb"], independent)
    for unit in sim + real:
        assert abs(attributed[unit] - measured[unit]["pss_kb"] / 1024) <= max(0.01 * attributed[unit], 0.1), unit
    # reclaim (MemAvailable delta): within 5 % of the simulated sizes of the stopped simulated daemons plus the
    # anonymous memory of the stopped real Debian daemons (their file pages stay cached, so PSS would overstate)
    expected = sum(INVENTORY[u]["size_mib"] * scale for u in sim) + sum(measured[u]["anon_kb"] for u in real) / 1024
    assert abs(result["reclaimed_mb"] - expected) <= 0.05 * expected, (result["reclaimed_mb"], expected)


def test_management_link_found_under_become_and_its_carrier_refused(host):
    """converge's SSH play: the engine found the link (eth0, from SSH_CONNECTION of an ancestor above sudo) and
    refused a profile disabling NetworkManager before any change."""
    record = json.loads(host.file("/root/es-mgmt-refusal.json").content_string)
    assert f"NetworkManager.service: carries the management link on {record['interface']}" in record["msg"]
    assert record["msg"].startswith("services layer: ") and record["msg"].endswith("-- nothing was changed")
    assert show(host, "NetworkManager.service") == {"UnitFileState": "enabled", "ActiveState": "active"}
