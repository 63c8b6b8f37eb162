"""A real ansible-playbook run loads the callback by FQCN (ansible.cfg) and writes the report files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]


def test_playbook_writes_report(tmp_path):
    env = dict(
        os.environ, ANSIBLE_CONFIG=str(ROOT / "tests" / "ansible.cfg"), ANSIBLE_EDGESLIM_REPORT_DIR=str(tmp_path)
    )
    playbook = Path(sys.executable).with_name("ansible-playbook")
    res = subprocess.run(
        [str(playbook), "-i", "tests/integration/report/inventory.yml", "tests/integration/report/playbook.yml"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "EDGESLIM FLEET REPORT" in res.stdout
    doc = json.loads((tmp_path / "edgeslim-report.json").read_text())
    assert {h["host"]: h["status"] for h in doc["hosts"]} == {"fake-1": "ok", "fake-2": "rolled_back"}
    assert doc["totals"]["reclaimed_mb_total"] == 1600.0 / 2
    page = (tmp_path / "edgeslim-report.html").read_text()  # in the default formats
    assert "fake-1" in page and "<svg" in page


def test_no_files_without_output_dir(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ANSIBLE_EDGESLIM_REPORT_DIR"}
    env["ANSIBLE_CONFIG"] = str(ROOT / "tests" / "ansible.cfg")
    playbook = Path(sys.executable).with_name("ansible-playbook")
    res = subprocess.run(
        [str(playbook), "-i", str(ROOT / "tests/integration/report/inventory.yml"),
         str(ROOT / "tests/integration/report/playbook.yml")],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "EDGESLIM FLEET REPORT" in res.stdout
    assert list(tmp_path.iterdir()) == []
