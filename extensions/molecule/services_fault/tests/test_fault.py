"""The fault scenario: the role failed the host explicitly and left every unit exactly as it was."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "tests" / "sim"))
import simcheck


def test_host_failed_explicitly_after_restore(host):
    record = json.loads(host.file("/root/es-fault-result.json").content_string)
    assert record["failed_task"] == "Fail this host explicitly (a rolled-back host must not look healthy)"
    assert "es-fault-respawn.service is still active after stop" in record["msg"]
    assert "every unit and the default target were restored" in record["msg"]


def test_every_unit_back_exactly(host):
    assert simcheck.check_units_as_recorded(host) == []
    assert "es-fault-respawn.service" in host.file("/root/es-pre-state.txt").content_string


def test_default_target_and_journal(host):
    assert host.check_output("systemctl get-default") == "graphical.target"
    journal = json.loads(host.file("/var/lib/edgeslim/journal.json").content_string)
    assert journal["layers"] == {}
