"""edgeslim.jetson.pull_timer in check mode on this machine (nothing is written): the units it would write, and the
bad inputs it refuses before any change. The Molecule scenario `pull` runs the installed timer's service for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
GOOD = {
    "pull_timer_url": "git://127.0.0.1/edgeslim.git",
    "pull_timer_profile": "warehouse_robot",
    "pull_timer_reboot_ok": False,
    "pull_timer_unit": "edgeslim-pull-unittest",
    "pull_timer_command": str(BIN / "ansible-pull"),
}


def run_role(tmp_path: Path, role_vars: dict) -> dict:
    """The role in check mode with --diff; what it registered is dumped to a file by a task after it."""
    role_vars = {"pull_timer_vars_file": str(tmp_path / "etc" / "pull.json"), **role_vars}
    dump = {
        "name": "Dump what the role registered",
        "ansible.builtin.copy": {
            "dest": str(tmp_path / "registered.json"),
            "content": "{{ {'units': __pull_timer_units, 'vars': __pull_timer_vars_written,"
            " 'enable': __pull_timer_enabled | default({})} | to_json }}",
            "mode": "0644",
        },
        "check_mode": False,
    }
    play = [
        {
            "name": "pull_timer",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "roles": [{"role": "edgeslim.jetson.pull_timer", "vars": role_vars}],
            "post_tasks": [dump],
        }
    ]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONFIG=str(tmp_path / "none.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"),
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_NOCOLOR="1",
        PATH=f"{BIN}:{env.get('PATH', '')}",
    )
    res = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", "--check", "--diff", "play.yml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    registered = tmp_path / "registered.json"
    return {
        "rc": res.returncode,
        "out": res.stdout + res.stderr,
        "registered": json.loads(registered.read_text()) if registered.exists() else None,
    }


def rendered(result: dict, suffix: str) -> str:
    (unit,) = [u for u in result["registered"]["units"]["results"] if u["item"] == suffix]
    return unit["diff"]["after"] if isinstance(unit["diff"], dict) else unit["diff"][0]["after"]


def test_check_mode_plans_the_units_and_writes_nothing(tmp_path):
    result = run_role(tmp_path, GOOD)
    assert result["rc"] == 0, result["out"][-3000:]
    service = rendered(result, "service")
    exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    assert exec_start == (
        f'ExecStart={BIN / "ansible-pull"} --url "git://127.0.0.1/edgeslim.git" --checkout "main" '
        f'--directory "/var/lib/edgeslim/pull" --clean --inventory localhost, '
        f'--extra-vars "@{tmp_path / "etc" / "pull.json"}" playbooks/pull.yml'
    )
    assert "Type=oneshot" in service.splitlines()
    assert 'Environment="ANSIBLE_EDGESLIM_REPORT_DIR=/var/lib/edgeslim/reports"' in service.splitlines()
    timer = rendered(result, "timer").splitlines()
    assert {"OnBootSec=15min", "OnUnitActiveSec=6h", "RandomizedDelaySec=30min"} <= set(timer)
    diff = result["registered"]["vars"]["diff"]
    variables = json.loads((diff if isinstance(diff, dict) else diff[0])["after"])
    assert variables == {"profile_name": "warehouse_robot", "edgeslim_reboot_ok": False, "edgeslim_pull_max_delay": 0}
    assert result["registered"]["enable"]["skipped"] is True  # a unit not written in check mode is not enabled
    assert not (tmp_path / "etc").exists()
    assert not Path("/etc/systemd/system/edgeslim-pull-unittest.service").exists()


def test_percent_and_dollar_are_escaped_for_systemd(tmp_path):
    result = run_role(tmp_path, {**GOOD, "pull_timer_url": "https://git.example.com/a%20b/$repo.git"})
    assert result["rc"] == 0, result["out"][-3000:]
    assert '--url "https://git.example.com/a%%20b/$$repo.git"' in rendered(result, "service")


@pytest.mark.parametrize(
    ("override", "why"),
    [
        ({"pull_timer_url": ""}, "no URL"),
        ({"pull_timer_url": "https://git.example.com/fleet edgeslim.git"}, "a space in the URL"),
        ({"pull_timer_reboot_ok": "yes"}, "a reboot policy that is not a boolean"),
        ({"pull_timer_interval": "6 hours later"}, "not a systemd time span"),
        ({"pull_timer_randomized_delay": "-5min"}, "not a systemd time span"),
        ({"pull_timer_profile": ""}, "no profile"),
        ({"pull_timer_dir": "relative/dir"}, "a relative checkout directory"),
        ({"pull_timer_command": "/nonexistent/ansible-pull"}, "no ansible-pull on the device"),
    ],
)
def test_bad_input_is_refused_before_any_change(tmp_path, override, why):
    result = run_role(tmp_path, {**GOOD, **override})
    assert result["rc"] == 2, why
    refusals = (
        "Check the pull settings (before any change)",
        "Refuse a device without ansible-pull or git (nothing changed)",
    )
    assert sum("fatal: [localhost]" in line for line in result["out"].splitlines()) == 1, result["out"][-2000:]
    assert any(f"{name}] ***" in result["out"] for name in refusals)
    assert "The service and the timer" not in result["out"], why
    assert "nothing changed" in result["out"]
    assert result["registered"] is None
