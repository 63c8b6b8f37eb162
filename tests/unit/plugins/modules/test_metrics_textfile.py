"""edgeslim.jetson.metrics_textfile through main(): a device slimmed by the units module (fake systemd), the file
written atomically, carried over by an audit, drift after a unit comes back, check mode, refusals."""

from __future__ import annotations

import json
import shutil

import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import metrics as mt
from ansible_collections.edgeslim.jetson.plugins.modules import metrics_textfile
from ansible_collections.edgeslim.jetson.plugins.modules import units as units_module
from conftest import FIXTURES
from fake_systemd import FakeSystemd, jetson_units
from modhelper import run_module

PLAN = {"mask": ["gdm3", "nvargus-daemon"], "disable": ["avahi-daemon", "ModemManager"],
        "protected": ["ssh.service"], "verify_delay": 0}  # fmt: skip


@pytest.fixture
def device(tmp_path):
    fake = FakeSystemd(jetson_units())
    journal = tmp_path / "journal.json"
    res = run_module(units_module.main, {**PLAN, "journal_path": str(journal)}, run_command=fake, bin_path="/s")
    assert res["changed"], res
    return {"fake": fake, "journal": journal, "prom": tmp_path / "collector" / "edgeslim.prom", "tmp": tmp_path}


def run(device, args, check=False, diff=False):
    base = {"path": str(device["prom"]), "journal_path": str(device["journal"]), "version": "0.1.0", "timestamp": 100}
    return run_module(
        metrics_textfile.main, {**base, **args}, check=check, diff=diff, run_command=device["fake"], bin_path="/s"
    )


def samples(path) -> dict:
    return {(n, tuple(sorted(lab.items()))): v for n, lab, v in mt.parse_samples(path.read_text())}


def test_slim_then_audit_then_drift(device):
    res = run(
        device, {"playbook": "slim", "layers": {"services": {"reclaimed_bytes": 1048576, "pending_reboot": False}}}
    )
    assert res["changed"] and res["drift"] == {"services": False, "boot_entry": False, "carveouts": None}
    got = samples(device["prom"])
    assert got[("edgeslim_reclaimed_bytes", (("layer", "services"),))] == 1048576
    assert got[("edgeslim_drift", (("kind", "services"),))] == 0
    assert oct(device["prom"].stat().st_mode & 0o777) == "0o644"
    # The audit knows no reclaim: the slim run's figure stays. An upgrade unmasks and starts nvargus-daemon.
    unit = device["fake"].units["nvargus-daemon.service"]
    unit.masked, unit.file_state, unit.active = False, "enabled", "active"
    res = run(device, {"playbook": "audit", "timestamp": 200, "carveouts_drift": False})
    assert res["drift"] == {"services": True, "boot_entry": False, "carveouts": False}
    assert [f["unit"] for f in res["drift_details"]["services"]] == ["nvargus-daemon.service"]
    got = samples(device["prom"])
    assert got[("edgeslim_reclaimed_bytes", (("layer", "services"),))] == 1048576
    assert got[("edgeslim_drift", (("kind", "services"),))] == 1
    assert got[("edgeslim_last_run_timestamp_seconds", (("playbook", "audit"),))] == 200
    assert got[("edgeslim_last_run_result", (("playbook", "audit"), ("result", "ok")))] == 1
    # One systemctl show for the journaled units per run, nothing else.
    shows = [c for c in device["fake"].calls if "show" in c]
    assert shows[-1][-4:] == sorted(json.loads(device["journal"].read_text())["layers"]["services"]["units"])[-4:]


def test_boot_entry_drift_from_the_journaled_file(device):
    conf = device["tmp"] / "extlinux.conf"
    shutil.copy(FIXTURES / "drift" / "extlinux-slimmed.conf", conf)
    doc = json.loads(device["journal"].read_text())
    boot = json.loads((FIXTURES / "drift" / "journal-slimmed.json").read_text())["layers"]["swiotlb"]
    doc["layers"]["swiotlb"] = dict(boot, path=str(conf))
    device["journal"].write_text(json.dumps(doc))
    assert run(device, {"playbook": "audit"})["drift"]["boot_entry"] is False
    conf.write_text(conf.read_text().replace("DEFAULT edgeslim", "DEFAULT primary"))
    res = run(device, {"playbook": "audit"})
    assert res["drift"]["boot_entry"] is True
    assert 'edgeslim_drift{kind="boot_entry"} 1' in device["prom"].read_text().splitlines()


def test_check_mode_writes_nothing_and_shows_a_diff(device):
    res = run(device, {"playbook": "slim"}, check=True, diff=True)
    assert res["changed"] and not device["prom"].exists() and not device["prom"].parent.exists()
    assert 'edgeslim_info{version="0.1.0"} 1' in res["diff"]["after"] and res["diff"]["before"] == ""
    run(device, {"playbook": "slim"})
    assert run(device, {"playbook": "slim"})["changed"] is False  # same run, same file


def test_failed_run_recorded(device):
    run(device, {"playbook": "slim", "result": "rolled_back", "layers": {"swiotlb": {"reclaimed_bytes": 0}}})
    got = samples(device["prom"])
    assert got[("edgeslim_last_run_result", (("playbook", "slim"), ("result", "rolled_back")))] == 1
    assert got[("edgeslim_last_run_result", (("playbook", "slim"), ("result", "ok")))] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"path": "/tmp/edgeslim.txt"}, "must end in .prom"),
        ({"layers": {"gpu": {}}}, "unknown layer"),
        ({"layers": {"services": {"reclaimed": 1}}}, "unknown key"),
        ({"layers": {"services": {"reclaimed_bytes": "lots"}}}, "layers.services"),
    ],
)
def test_bad_input_refused_before_writing(device, args, message):
    res = run(device, {"playbook": "slim", **args})
    assert res["failed"] and message in res["msg"]
    assert not device["prom"].exists()


def test_unreadable_journal_leaves_drift_unknown(device):
    device["journal"].write_text("{")
    res = run(device, {"playbook": "audit"})
    assert res["drift"]["services"] is None and "drift not checked" in res["warnings_list"][0]
    assert 'kind="services"' not in device["prom"].read_text()


def test_rollback_before_the_reboot_leaves_nothing_pending(device):
    run(device, {"playbook": "slim", "layers": {"swiotlb": {"pending_reboot": True}}})
    run(device, {"playbook": "rollback", "layers": {"swiotlb": {"reclaimed_bytes": 0, "pending_reboot": "flip"}}})
    got = samples(device["prom"])
    assert got[("edgeslim_reboot_pending", (("layer", "swiotlb"),))] == 0
    res = run(device, {"playbook": "rollback", "layers": {"swiotlb": {"pending_reboot": "maybe"}}})
    assert res["failed"] and "layers.swiotlb" in res["msg"]
