"""Real ansible-playbook runs in canary batches: progress per batch, hosts never reached, inventory serial refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
HERE = ROOT / "tests/integration/rollout"


def run(tmp_path, *args, inventory_vars=None):
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "tests/ansible.cfg"), ANSIBLE_EDGESLIM_REPORT_DIR=str(tmp_path),
               ANSIBLE_SHOW_CUSTOM_STATS="1")  # fmt: skip
    sources = ["-i", str(HERE / "inventory.yml")]
    if inventory_vars:  # a second inventory source: group_vars of the fleet, as an operator would set them
        extra = tmp_path / "extra-inventory.yml"
        extra.write_text(json.dumps({"fleet": {"vars": inventory_vars}}))
        sources += ["-i", str(extra)]
    playbook = Path(sys.executable).with_name("ansible-playbook")
    res = subprocess.run([str(playbook), *sources, str(HERE / "playbook.yml"), *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=False)  # fmt: skip
    report = tmp_path / "edgeslim-report.json"
    doc = json.loads(report.read_text()) if report.exists() else None
    return res, doc


def run_level(stdout):
    """The run-level stats (what AWX exports as artifacts), from the default callback's CUSTOM STATS."""
    line = next(line for line in stdout.splitlines() if line.strip().startswith("RUN: "))
    return json.loads(line.strip()[len("RUN: ") :])["edgeslim_fleet"]


def test_canary_abort_reports_hosts_never_reached(tmp_path):
    # Batches of 1, 2, then the rest: canary-2 (batch 2) rolls back with a zero failure budget.
    res, doc = run(tmp_path, "-e", '{"edgeslim_serial": [1, 2, "100%"], "fail_host": "canary-2"}')
    assert res.returncode == 2, res.stdout + res.stderr
    assert "edgeslim batch 1/3: 1/5 hosts done, 1 ok, 0 failed, 100 MB reclaimed so far" in res.stdout
    assert "edgeslim batch 2/3: 3/5 hosts done, 2 ok, 1 failed, 200 MB reclaimed so far" in res.stdout
    status = {h["host"]: h["status"] for h in doc["hosts"]}
    # canary-3 shared the failed batch and had applied its layer when the budget ran out.
    assert status == {"canary-1": "ok", "canary-2": "rolled_back", "canary-3": "ok",
                      "canary-4": "not_reached", "canary-5": "not_reached"}  # fmt: skip
    assert doc["totals"]["by_status"]["not_reached"] == 2
    md = (tmp_path / "edgeslim-report.md").read_text()
    assert "| canary-4 |" in md and "not_reached" in md
    junit = (tmp_path / "edgeslim-report.xml").read_text()
    assert 'skipped="2"' in junit and "<skipped" in junit
    # Run-level stats: rewritten as every batch starts and ends; the last write was as batch 2 started.
    fleet = run_level(res.stdout)
    assert fleet["by_status"]["ok"] == 1 and fleet["by_status"]["not_run"] == 2  # batch 2 had just started
    assert fleet["by_status"]["not_reached"] == 2
    assert fleet["complete"] is False and fleet["reclaimed_mb_total"] == 100.0


def test_full_rollout_one_line_per_batch(tmp_path):
    res, doc = run(tmp_path, "-e", "edgeslim_serial=2")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [line for line in res.stdout.splitlines() if line.startswith("edgeslim batch")]
    assert lines == [
        "edgeslim batch 1/3: 2/5 hosts done, 2 ok, 0 failed, 200 MB reclaimed so far",
        "edgeslim batch 2/3: 4/5 hosts done, 4 ok, 0 failed, 400 MB reclaimed so far",
        "edgeslim batch 3/3: 5/5 hosts done, 5 ok, 0 failed, 500 MB reclaimed so far",
    ]
    assert "not_reached" not in json.dumps(doc)
    fleet = run_level(res.stdout)
    assert fleet["complete"] is True and fleet["by_status"]["ok"] == 5 and fleet["failed_total"] == 0
    assert fleet["reclaimed_mb"] == {"services": 500.0, "swiotlb": 0.0, "carveouts": 0.0}


def test_budget_left_run_level_totals_count_the_rolled_back_host(tmp_path):
    res, _doc = run(tmp_path, "-e", '{"edgeslim_serial": [1, 2, "100%"], "fail_host": "canary-2",'
                                    ' "edgeslim_max_fail_percentage": 50}')  # fmt: skip
    assert res.returncode == 2, res.stdout + res.stderr  # a host failed, the rollout went on
    fleet = run_level(res.stdout)
    assert fleet["by_status"]["rolled_back"] == 1 and fleet["by_status"]["ok"] == 4
    assert fleet["failed_total"] == 1 and fleet["complete"] is True and fleet["reclaimed_mb_total"] == 400.0


def test_inventory_serial_refused_before_any_change(tmp_path):
    res, doc = run(tmp_path, inventory_vars={"edgeslim_serial": 2})
    assert res.returncode == 2, res.stdout + res.stderr
    assert "edgeslim_serial is [2] for this host but the play runs with [1, '10%', '100%']" in res.stdout
    assert "pass it as an extra variable" in res.stdout
    # The first batch failed at the guard, before any task that publishes or changes anything.
    assert "Publish a services layer result" not in res.stdout
    assert doc is None


def test_inventory_value_overridden_with_extra_vars_is_accepted(tmp_path):
    res, _doc = run(tmp_path, "-e", '{"edgeslim_serial": 2, "edgeslim_max_fail_percentage": "50%"}',
                    inventory_vars={"edgeslim_serial": 3, "edgeslim_max_fail_percentage": 0})  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr


def test_inventory_failure_budget_refused(tmp_path):
    res, _doc = run(tmp_path, inventory_vars={"edgeslim_max_fail_percentage": 20})
    assert res.returncode == 2
    assert "edgeslim_max_fail_percentage is 20.0 for this host but the play runs with 0.0" in res.stdout
