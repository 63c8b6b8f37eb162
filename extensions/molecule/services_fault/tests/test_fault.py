"""The fault scenario: the role failed the host explicitly and left every unit exactly as it was."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "tests" / "sim"))
import simcheck


def test_host_failed_explicitly_after_restore(host):
    record = json.loads(host.file("/root/es-fault-result.json").content_string)
    assert record["failed_task"] == "Fail this host explicitly (restored by apply, or not committed after the reboot)"
    assert "es-fault-respawn.service is still active after stop" in record["msg"]
    assert record["msg"].startswith("services layer: ") and record["msg"].endswith("-- services: rolled_back")


def test_every_unit_back_exactly(host):
    assert simcheck.check_units_as_recorded(host) == []
    assert "es-fault-respawn.service" in host.file("/root/es-pre-state.txt").content_string


def test_default_target_and_journal(host):
    assert host.check_output("systemctl get-default") == "graphical.target"
    journal = json.loads(host.file("/var/lib/edgeslim/journal.json").content_string)
    assert journal["layers"] == {}


def _stubborn_record(host) -> dict:
    return json.loads(host.file("/root/es-stubborn-result.json").content_string)


def test_stubborn_unit_bounded_and_reported(host):
    record = _stubborn_record(host)
    slim = record["slim"]
    assert slim["status"] == "applied", slim
    unit = slim["details"]["units"]["es-stubborn.service"]
    assert unit["stop_result"] == "failed", unit
    assert any("es-stubborn.service ended failed" in note for note in unit["notes"])
    assert slim["details"]["stop_failed"] == ["es-stubborn.service"]
    # TimeoutStopSec=5 applied: the stop ended in seconds, far below the 120 s stop_timeout
    assert record["seconds"] < 100, record["seconds"]
    after = record["after_slim"]
    assert "Id=es-stubborn.service\nActiveState=failed\nUnitFileState=disabled" in after


def test_requires_client_stopped_as_dependency_and_restarted(host):
    record = _stubborn_record(host)
    with_it = record["slim"]["details"]["stopped_with"]
    assert with_it["es-dep-client.service"] == {"by": "es-dep-server.service", "via": "Requires="}
    assert "Id=es-dep-client.service\nActiveState=inactive\nUnitFileState=enabled" in record["after_slim"]
    rollback = record["rollback"]
    assert rollback["status"] == "rolled_back"
    assert "es-dep-client.service" in rollback["details"]["restarted_dependencies"]
    assert host.service("es-dep-client.service").is_running
    assert host.service("es-stubborn.service").is_running
