"""After slim + rollback (twice; the second time from the copy of a damaged journal): every unit, alias and the
default target exactly as prepare left them; a block naming dbus.socket refused. Then a slim whose stop of gdm takes
two units with it (gnome-session-desktop, PartOf= gdm.service; a client that exits once gdm is gone) and a rollback:
both down after the apply, named in the record's collateral, running again after the rollback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "tests" / "sim"))
import simcheck


def test_every_unit_back_exactly(host):
    assert simcheck.check_units_as_recorded(host) == []


def test_aliases_and_default_target_back(host):
    assert simcheck.check_default_target(host) + simcheck.check_display_manager_aliases(host) == []


def test_journal_layer_cleared(host):
    journal = json.loads(host.file("/var/lib/edgeslim/journal.json").content_string)
    # every layer write counts a generation: slims and rollbacks of converge wrote several
    assert journal == {"version": 1, "generation": journal["generation"], "layers": {}}
    assert isinstance(journal["generation"], int) and journal["generation"] >= 2


def test_journald_dropin_removed(host):
    assert not host.file("/etc/systemd/journald.conf.d/60-edgeslim.conf").exists


def test_core_units_never_stopped(host):
    # converge also tried a block naming dbus.socket: refused before any change
    for unit in ("dbus.socket", "dbus.service", "systemd-logind.service", "ssh.service"):
        assert host.service(unit).is_running, unit


def test_damaged_journal_kept_aside_after_restoring_from_its_copy(host):
    # the last rollback of converge ran on a journal truncated to half: restored from journal.json.prev
    assert host.file("/var/lib/edgeslim/journal.json.corrupt").exists
    prev = json.loads(host.file("/var/lib/edgeslim/journal.json.prev").content_string)
    journal = json.loads(host.file("/var/lib/edgeslim/journal.json").content_string)
    assert prev == journal and prev["layers"] == {}  # rebuilt from the copy: both files hold the new generation


def test_metrics_file_for_node_exporter(host):
    # converge wrote it after the slim and again after re-enabling ModemManager: the audit's services drift is 1
    prom = host.file("/var/lib/node_exporter/textfile_collector/edgeslim.prom")
    assert prom.exists and prom.mode == 0o644 and prom.user == "root"
    lines = prom.content_string.splitlines()
    assert 'edgeslim_drift{kind="services"} 1' in lines
    assert "# TYPE edgeslim_drift gauge" in lines
    assert any(line.startswith('edgeslim_info{version="') for line in lines)
    # nothing else (no temp file) in the collector's directory
    assert host.run("ls -A /var/lib/node_exporter/textfile_collector").stdout.split() == ["edgeslim.prom"]


# what the slim naming gdm takes down with it: a client that exits once gdm is gone, and gdm's PartOf= units
COLLATERAL = ["es-display-client.service", "gnome-session-desktop.service", "gnome-software.service"]


def collateral_outcome(host) -> dict:
    return json.loads(host.file("/root/es-collateral.json").content_string)


def test_collateral_went_down_with_the_apply_and_was_recorded(host):
    out = collateral_outcome(host)
    assert out["status"] == "applied"
    states = simcheck.unit_states(out["states_after_apply"])
    assert states == {
        "es-display-client.service": ("static", "failed"),
        "gnome-session-desktop.service": ("enabled", "inactive"),
        "gnome-software.service": ("enabled", "inactive"),
    }, states
    collateral = out["record_collateral"]
    assert sorted(collateral) == COLLATERAL, collateral
    assert collateral["es-display-client.service"] == {"by": None, "via": "observed", "state": "failed"}
    for part in ("gnome-session-desktop.service", "gnome-software.service"):
        # by: the name the profile gave gdm (gdm.service or its alias gdm3.service)
        assert collateral[part]["via"] == "PartOf=" and collateral[part]["state"] == "inactive", collateral
        assert collateral[part]["by"] in ("gdm.service", "gdm3.service"), collateral


def test_collateral_running_again_after_the_rollback(host):
    out = collateral_outcome(host)
    for unit in [*COLLATERAL, "gdm.service"]:
        assert host.service(unit).is_running, unit
    assert out["rollback_collateral"] == COLLATERAL
    assert out["rollback_collateral_failed"] == []
