"""Fleet rollout with faults: the healthy robot is slimmed, the faulty one rolled back and reported, the
unreachable one reported, the smart camera (outside the limit) untouched; robots on JetPack 5 (Python 3.8) and 7
(3.12) slimmed, audited and restored by rollback.yml."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

EPHEMERAL = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"))
REPORT = EPHEMERAL / "report" / "edgeslim-report.json"
AUDIT = EPHEMERAL / "report-audit" / "edgeslim-report.json"
CANARY = EPHEMERAL / "report-canary" / "edgeslim-report.json"
REFUSED = EPHEMERAL / "report-refused"
# Robots slimmed without a reboot, then restored by playbooks/rollback.yml: JetPack 5 (3.8) and 7 (3.12).
RESTORED = {"es-fleet-robot-r35": "3.8", "es-fleet-robot-thor": "3.12"}
STOCK_KB = int(os.environ.get("EDGESLIM_SIM_MEMTOTAL_MIB_ORIN_NANO_8GB", "7620")) * 1024
# What the simulated boot books for the warehouse robot's entry (the emulated lane's formulas): swiotlb=2048 instead
# of 32768 slots, (32768 - 2048) x 2072 B; display disabled, so no 32 MiB no-map early-boot framebuffer, S - S/512.
SWIOTLB_KB, FRAMEBUFFER_KB = 62160, 32704


@pytest.fixture(scope="module")
def report():
    return {h["host"]: h for h in json.loads(REPORT.read_text())["hosts"]}


def name(host) -> str:
    return host.backend.get_hostname()


def test_report_marks_each_host(report):
    ok = report["es-fleet-robot-ok"]
    assert ok["status"] == "ok"
    # Services applied; both boot layers rebooted (once, see test_device_state) and were committed by the device. A
    # container runs the host's kernel, so the kernel checks were impossible: never reported as "applied". MemTotal
    # is the simulated boot's, so the megabytes are measured: SWIOTLB its formula share, carveouts the rest.
    assert ok["layer_status"] == {
        "services": "applied",
        "swiotlb": "unverified_container",
        "carveouts": "unverified_container",
    }
    assert ok["reclaimed_mb"]["services"] > 0
    swiotlb_mb = round(SWIOTLB_KB / 1024, 1)
    assert ok["reclaimed_mb"]["swiotlb"] == swiotlb_mb
    assert ok["reclaimed_mb"]["carveouts"] == round((SWIOTLB_KB + FRAMEBUFFER_KB) / 1024 - swiotlb_mb, 1)
    assert abs(ok["memtotal_after_mb"] - ok["memtotal_before_mb"] - (SWIOTLB_KB + FRAMEBUFFER_KB) / 1024) < 0.1
    assert report["es-fleet-robot-fault"]["status"] == "rolled_back"
    # Health check failed after the reboot: the device reverted SWIOTLB by itself, the play rolled back the services
    # layer it had applied before (slim_rollback_scope host) and failed the host.
    sick = report["es-fleet-robot-sick"]
    assert sick["status"] == "rolled_back"
    assert sick["layer_status"]["swiotlb"] == "rolled_back"
    assert sick["layer_status"]["services"] == "rolled_back"
    assert sick["layer_status"]["carveouts"] == "rolled_back"
    for robot in RESTORED:  # not allowed to reboot: both boot layers staged in the boot entry
        assert report[robot]["status"] == "pending_reboot", report[robot]
        assert report[robot]["layer_status"] == {
            "services": "applied",
            "swiotlb": "pending_reboot",
            "carveouts": "pending_reboot",
        }
        assert report[robot]["reclaimed_mb"]["services"] > 0
    assert report["es-fleet-robot-gone"]["status"] in ("unreachable", "failed")
    assert "es-fleet-camera" not in report


def test_canary_abort_lists_hosts_never_reached():
    """Canary batch of one: the faulty robot rolled back, the 0 % budget stopped the play before robot-gone's batch."""
    doc = json.loads(CANARY.read_text())
    assert {h["host"]: h["status"] for h in doc["hosts"]} == {
        "es-fleet-robot-fault": "rolled_back",
        "es-fleet-robot-gone": "not_reached",
    }
    assert doc["totals"]["by_status"] == {"rolled_back": 1, "not_reached": 1}


def test_inventory_serial_refused_before_any_change():
    """converge checked the refusal message; the refused run published nothing (the guard is the first task)."""
    assert not (REFUSED / "edgeslim-report.json").exists()


def test_audit_on_each_release():
    audit = {h["host"]: h for h in json.loads(AUDIT.read_text())["hosts"]}
    assert set(audit) == {"es-fleet-robot-ok", *RESTORED}
    for robot, h in audit.items():
        assert h["layer_status"]["services"] == "planned", (robot, h)


def test_release_python(host):
    want = RESTORED.get(name(host), "3.10")
    assert host.file("/usr/bin/python3").linked_to == f"/opt/jetpack-python/{want}/bin/python{want}"


def test_device_state(host):
    default = host.check_output("systemctl get-default")
    units_now = host.check_output("systemctl list-unit-files --no-legend --no-pager | sort")
    units_before = host.file("/root/units-before.txt").content_string.strip()
    if name(host) == "es-fleet-robot-ok":
        assert default == "multi-user.target"
        assert host.service("gdm.service").is_running is False
        assert host.file("/var/lib/edgeslim/journal.json").exists
    else:  # rolled back, or never in the limit: exactly as before
        assert default == "graphical.target"
        assert units_now == units_before
        assert host.service("gdm.service").is_running
        stock = host.file("/root/extlinux.conf.stock").content
        assert host.file("/boot/extlinux/extlinux.conf").content == stock
        assert not host.file("/etc/systemd/system/edgeslim-boot-commit.service").exists
    if name(host) in ("es-fleet-robot-ok", "es-fleet-robot-sick"):
        # Both boot layers were checked at the same boot: one reboot for the two of them.
        verdicts = {
            layer: json.loads(host.file(f"/var/lib/edgeslim/boot-commit/{layer}.json").content_string)
            for layer in ("swiotlb", "carveouts")
        }
        assert verdicts["swiotlb"]["boot_identity"] == verdicts["carveouts"]["boot_identity"]
        assert all(v["boots"] == 1 for v in verdicts.values()), verdicts
    if name(host) == "es-fleet-robot-ok":
        assert {v["status"] for v in verdicts.values()} == {"committed"}
    # MemTotal is what the booted entry gives (the simulated boot): the committed robot gained both boot layers; the
    # sick robot reverted by itself and boots the stock entry again, so it gained nothing; the others never rebooted.
    if name(host) in ("es-fleet-robot-ok", "es-fleet-robot-sick", "es-fleet-robot-fault", "es-fleet-robot-r35"):
        memtotal = int(host.file("/proc/meminfo").content_string.split("MemTotal:", 1)[1].split()[0])
        gained = SWIOTLB_KB + FRAMEBUFFER_KB if name(host) == "es-fleet-robot-ok" else 0
        assert memtotal == STOCK_KB + gained, (name(host), memtotal)
    if name(host) == "es-fleet-robot-sick":
        assert verdicts["swiotlb"]["status"] == "reverted"
        assert any("health command failed" in f for f in verdicts["swiotlb"]["failures"])
        # carveouts passed its own checks but was booted with the failing layer: reverted with it
        assert verdicts["carveouts"]["status"] == "reverted"
        assert verdicts["carveouts"]["failures"] == [
            "booted together with swiotlb, which failed; the shared entry is reverted"
        ]


def test_reboots_per_device(host):
    # One line per boot since prepare: robot-ok 1 + slim's one shared reboot; robot-sick 1 + slim's reboot + the
    # device's own revert reboot, and no further reboot by the rollback (the device already runs the stock entry);
    # robot-fault (reboot policy false) and the camera (outside the limit) never reboot.
    boots = host.file("/var/lib/es-boots.log").content_string.split()
    assert len(boots) == len(set(boots)), boots
    expected = {"es-fleet-robot-ok": 2, "es-fleet-robot-sick": 3, "es-fleet-robot-fault": 1, "es-fleet-camera": 1,
                "es-fleet-robot-r35": 1, "es-fleet-robot-thor": 1}  # fmt: skip
    assert len(boots) == expected[name(host)], boots


PROM = "/var/lib/node_exporter/textfile_collector/edgeslim.prom"


def prom_samples(host) -> dict[str, float]:
    """The metrics file's samples as 'name{labels}' -> value."""
    out = {}
    for line in host.file(PROM).content_string.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_metrics_file(host):
    # The last playbook of converge on each device wrote it: audit (robot-ok), slim's rescue (fault, sick), rollback
    # (r35, thor); the camera is outside the limit.
    robot = name(host)
    if robot in ("es-fleet-camera", "es-fleet-robot-gone"):
        return
    assert host.file(PROM).mode == 0o644
    got = prom_samples(host)
    if robot == "es-fleet-robot-ok":
        assert got['edgeslim_last_run_result{playbook="audit",result="ok"}'] == 1
        assert got['edgeslim_reclaimed_bytes{layer="services"}'] > 0  # slim's measure, carried over by the audit
        assert got['edgeslim_reboot_pending{layer="swiotlb"}'] == 0
        assert got['edgeslim_drift{kind="services"}'] == 0 and got['edgeslim_drift{kind="boot_entry"}'] == 0
    elif robot in ("es-fleet-robot-fault", "es-fleet-robot-sick"):
        assert got['edgeslim_last_run_result{playbook="slim",result="rolled_back"}'] == 1, got
        assert got['edgeslim_reclaimed_bytes{layer="services"}'] == 0
    else:  # slimmed without a reboot (staged boot layers), audited, then restored before any reboot
        assert got['edgeslim_last_run_result{playbook="rollback",result="ok"}'] == 1, got
        for layer in ("services", "swiotlb", "carveouts"):
            assert got[f'edgeslim_reclaimed_bytes{{layer="{layer}"}}'] == 0, got
            assert got[f'edgeslim_reboot_pending{{layer="{layer}"}}'] == 0, got
        assert got['edgeslim_drift{kind="services"}'] == 0 and got['edgeslim_drift{kind="boot_entry"}'] == 0


def test_audit_saw_no_drift():
    audit = json.loads(AUDIT.read_text())["hosts"]
    assert [n for h in audit for n in h["notes"] if " drift: " in n] == []
