"""The callback reads per-host set_stats and Ansible's outcomes, prints the table and writes the files."""

from __future__ import annotations

import json

from ansible.executor.stats import AggregateStats
from ansible_collections.edgeslim.jetson.plugins.callback.slim_report import CallbackModule
from fake_display import FakeDisplay


def make_callback(tmp_path, output_dir=True):
    cb = CallbackModule()
    cb._display = FakeDisplay()
    # Options as the loader would resolve them (the real load by FQCN is covered by tests/integration/report).
    cb._plugin_options = {"output_dir": str(tmp_path) if output_dir else "", "formats": ["json", "markdown", "junit"]}
    return cb


def test_stats_to_files(tmp_path):
    stats = AggregateStats()
    for host in ("robot-01", "robot-02", "camera-01"):
        stats.increment("ok", host)
    stats.increment("failures", "robot-02")
    stats.update_custom_stats("edgeslim", {"model": "Orin Nano", "profile": "warehouse_robot"}, "robot-01")
    stats.update_custom_stats("edgeslim", {"layers": {"services": {"status": "applied", "reclaimed_mb": 812.0}}},
                              "robot-01")  # fmt: skip
    stats.update_custom_stats("edgeslim", {"layers": {"services": {"status": "rolled_back"}}}, "robot-02")
    cb = make_callback(tmp_path)
    cb.v2_playbook_on_stats(stats)
    text = "\n".join(cb._display.lines)
    assert "EDGESLIM FLEET REPORT" in text and "robot-01" in text and "rolled_back" in text
    doc = json.loads((tmp_path / "edgeslim-report.json").read_text())
    by_host = {h["host"]: h for h in doc["hosts"]}
    assert by_host["robot-01"]["total_mb"] == 812.0
    assert by_host["robot-02"]["status"] == "rolled_back"
    assert by_host["camera-01"]["status"] == "not_run"  # processed but published nothing
    assert (tmp_path / "edgeslim-report.md").exists() and (tmp_path / "edgeslim-report.xml").exists()


def test_silent_without_edgeslim_stats(tmp_path):
    stats = AggregateStats()
    stats.increment("ok", "x")
    cb = make_callback(tmp_path)
    cb.v2_playbook_on_stats(stats)
    assert cb._display.lines == []
    assert not list(tmp_path.iterdir())


def test_check_mode_plan_is_ok_never_pending_reboot(tmp_path):
    """A --check run: the boot layers publish planned; the host is ok, nothing pending, nothing reclaimed."""
    stats = AggregateStats()
    stats.increment("ok", "robot-01")
    layers = {"services": {"status": "unchanged", "reclaimed_mb": 0.0},
              "swiotlb": {"status": "planned", "reclaimed_mb": None, "attributed_mb": 60.0},
              "carveouts": {"status": "planned", "reclaimed_mb": 12.0}}  # fmt: skip
    stats.update_custom_stats("edgeslim", {"layers": layers, "status": "ok"}, "robot-01")
    cb = make_callback(tmp_path)
    cb.v2_playbook_on_stats(stats)
    row = json.loads((tmp_path / "edgeslim-report.json").read_text())["hosts"][0]
    assert row["status"] == "ok" and row["pending_reboot"] is False and row["total_mb"] == 0
    assert row["planned"] == ["swiotlb", "carveouts"]
    assert row["notes"] == ["swiotlb planned (check mode: nothing changed)",
                            "carveouts planned (check mode: nothing changed)"]  # fmt: skip
    assert "ok (planned)" in "\n".join(cb._display.lines) and "pending_reboot" not in "\n".join(cb._display.lines)
    junit = (tmp_path / "edgeslim-report.xml").read_text()
    assert 'failures="0"' in junit and '<property name="pending_reboot" value="false"' in junit
