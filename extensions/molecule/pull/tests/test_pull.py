"""After a refused pull (lock held) and a real one: the device is slimmed, the lock is free, the report says so."""

from __future__ import annotations

import json
import os
from pathlib import Path

REPORT = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "report" / "edgeslim-report.json"


def test_pull_slimmed_the_device(host):
    assert host.check_output("systemctl get-default") == "multi-user.target"
    assert not host.service("gdm.service").is_running
    journal = json.loads(host.file("/var/lib/edgeslim/journal.json").content_string)
    assert "services" in journal["layers"] and "swiotlb" in journal["layers"]


def test_lock_released(host):
    # the pull stopped its holder unit and removed its record; the lock file stays (flock, not existence, is the lock)
    assert host.run("systemctl list-units --all --plain --no-legend 'edgeslim-lock-*'").stdout.strip() == ""
    assert not host.file("/run/edgeslim/device.json").exists
    assert host.run("flock --nonblock --conflict-exit-code 75 /run/edgeslim/device.lock true").rc == 0


def test_report_of_the_pull():
    rows = {h["host"]: h for h in json.loads(REPORT.read_text())["hosts"]}
    row = rows["es-pull-1"]
    assert row["status"] == "pending_reboot"
    assert row["reclaimed_mb"]["services"] > 0
