"""Fleet report: rows, totals and the four renderings, on small and 1,000-host synthetic fleets."""

from __future__ import annotations

import json
from xml.etree import ElementTree as ET

from ansible_collections.edgeslim.jetson.plugins.module_utils import report


def host_stats(services=800.0, swiotlb=None, status="applied", boot=("b1", "b1"), model="Orin Nano", sw_status=None):
    layers = {"services": {"status": status, "reclaimed_mb": services, "measured_by": "MemAvailable"}}
    if swiotlb is not None or sw_status:
        layers["swiotlb"] = {"status": sw_status or "applied", "reclaimed_mb": swiotlb, "measured_by": "MemTotal"}
    return {
        "model": model,
        "profile": "warehouse_robot",
        "memory": {
            "before": {"MemTotal_kb": 7802880, "MemAvailable_kb": 5000000, "boot_id": boot[0]},
            "after": {"MemTotal_kb": 7802880, "MemAvailable_kb": 5819200, "boot_id": boot[1]},
        },
        "layers": layers,
        "status": "ok",
    }


def test_ok_host_row():
    row = report.build_row("r1", host_stats(services=799.4, swiotlb=60.0), "ok")
    assert row.status == "ok"
    assert row.total_mb == 859.4
    assert row.memtotal_before_mb == 7620.0
    assert row.memavailable_after_mb == round(5819200 / 1024, 1)
    assert not row.rebooted_between_snapshots


def test_carveouts_drift_is_a_note_of_the_row():
    stats = host_stats()
    stats["layers"]["carveouts"] = {"status": "drift", "reclaimed_mb": None, "drift": ["carveout X present again"]}
    row = report.build_row("d", stats, "ok")
    assert row.layer_status["carveouts"] == "drift" and row.status == "ok"
    assert row.notes == ["carveouts drift: carveout X present again"]
    stats["layers"]["carveouts"]["drift"] = None  # no baseline: nothing claimed either way
    assert report.build_row("d", stats, "ok").notes == []


def test_rolled_back_host_counts_as_failure_and_reclaims_nothing():
    row = report.build_row("r2", host_stats(services=None, status="rolled_back"), "failed")
    assert row.status == "rolled_back"
    assert row.rolled_back
    assert row.total_mb == 0


def test_pending_reboot_and_reboot_detection():
    row = report.build_row("r3", host_stats(swiotlb=None, sw_status="pending_reboot", boot=("a", "b")), "ok")
    assert row.status == "pending_reboot"
    assert row.pending_reboot
    assert row.rebooted_between_snapshots
    assert "rebooted" in report.render_table([row])


def test_unreachable_and_silent_hosts():
    rows = report.build_rows({"a": host_stats()}, {"a": "ok", "b": "unreachable", "c": "failed"})
    assert [r.status for r in rows] == ["ok", "unreachable", "failed"]
    assert rows[1].memtotal_before_mb is None
    assert "-" in report.render_table(rows).splitlines()[3]


def test_string_numbers_and_junk_are_tolerated():
    stats = host_stats()
    stats["layers"]["services"]["reclaimed_mb"] = "812.5"
    stats["memory"]["after"]["MemTotal_kb"] = "n/a"
    row = report.build_row("s", stats, "ok")
    assert row.total_mb == 812.5
    assert row.memtotal_after_mb is None


def test_totals_and_renderings():
    rows = report.build_rows(
        {"a": host_stats(800), "b": host_stats(700, swiotlb=60), "c": host_stats(None, status="rolled_back")},
        {"a": "ok", "b": "ok", "c": "failed"},
    )
    t = report.totals(rows)
    assert t["reclaimed_mb"] == {"services": 1500.0, "swiotlb": 60.0, "carveouts": 0.0}
    assert t["reclaimed_mb_total"] == 1560.0
    assert t["by_status"] == {"rolled_back": 1, "ok": 2}
    doc = json.loads(report.render_json(rows))
    assert doc["totals"]["reclaimed_mb_total"] == 1560.0 and len(doc["hosts"]) == 3
    md = report.render_markdown(rows).splitlines()
    table = [line for line in md if line.startswith("|")]
    assert len({line.count("|") for line in table}) == 1  # every row has the header's column count
    assert "**1560 MB**" in md[2]
    suite = ET.fromstring(report.render_junit(rows).split("?>", 1)[1])
    assert suite.get("tests") == "3" and suite.get("failures") == "1"
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["c"]


def test_thousand_hosts():
    custom = {f"h{i:04d}": host_stats(services=800 + i % 7) for i in range(1000)}
    outcomes = {h: ("failed" if h.endswith("7") else "ok") for h in custom}
    rows = report.build_rows(custom, outcomes)
    t = report.totals(rows)
    assert t["hosts"] == 1000 and t["by_status"]["failed"] == 100
    table = report.render_table(rows)
    assert len(table.splitlines()) == 1000 + 4
    assert ET.fromstring(report.render_junit(rows).split("?>", 1)[1]).get("failures") == "100"
