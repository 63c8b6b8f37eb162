"""fleet_stats: run-level totals from hostvars, the same rules as the report."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.edgeslim.jetson.plugins.filter.fleet_stats import fleet_stats

REACHED = {"edgeslim_rollout_guard": {"changed": False}}


def test_totals_per_status_and_layer():
    hostvars = {
        "a": {**REACHED, "services_result": {"status": "applied", "reclaimed_mb": "812.5"},
              "swiotlb_result": {"status": "pending_reboot", "reclaimed_mb": None}},
        "b": {**REACHED, "services_result": {"status": "rolled_back", "reclaimed_mb": 300}},
        "c": {**REACHED},  # failed before any layer (preflight)
        "d": {"profile_name": "warehouse_robot"},  # inventory only: its batch never started
    }  # fmt: skip
    out = fleet_stats(hostvars, ["a", "b", "c", "d"], ["a"])
    assert out["hosts"] == 4
    assert out["by_status"] == {"unreachable": 0, "rolled_back": 1, "failed": 1, "pending_reboot": 1, "ok": 0,
                                "not_run": 0, "not_reached": 1}  # fmt: skip
    assert out["failed_total"] == 2 and out["complete"] is False
    # The rolled-back layer's megabytes are not counted.
    assert out["reclaimed_mb"] == {"services": 812.5, "swiotlb": 0.0, "carveouts": 0.0}
    assert out["reclaimed_mb_total"] == 812.5


def test_the_slim_flow_s_records_are_read_from_slim_report():
    """The slim role publishes its layers as slim_report (layer -> record), not as <layer>_result facts."""
    hostvars = {
        "a": {**REACHED, "slim_report": {"services": {"status": "applied", "reclaimed_mb": 107.0},
                                         "swiotlb": {"status": "pending_reboot", "reclaimed_mb": None}}},
        "b": {**REACHED, "slim_report": {"services": {"status": "rolled_back", "reclaimed_mb": None}},
              "services_result": {"status": "applied", "reclaimed_mb": 5}},
    }  # fmt: skip
    out = fleet_stats(hostvars, ["a", "b"], ["a"])
    assert out["by_status"]["rolled_back"] == 1 and out["by_status"]["pending_reboot"] == 1
    assert out["reclaimed_mb"] == {"services": 107.0, "swiotlb": 0.0, "carveouts": 0.0}


def test_all_reached_is_complete():
    hostvars = {h: {**REACHED, "services_result": {"status": "applied", "reclaimed_mb": 10}} for h in ("x", "y")}
    out = fleet_stats(hostvars, ["x", "y"], ["x", "y"])
    assert out["complete"] is True and out["by_status"]["ok"] == 2 and out["reclaimed_mb_total"] == 20.0


def test_refuses_non_lists():
    with pytest.raises(AnsibleFilterError, match="lists of host names"):
        fleet_stats({}, "all", [])
