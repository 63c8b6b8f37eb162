"""reboot_policy_errors: a reboot policy is a strict boolean, refused otherwise (roles/slim/tasks/reboot_policy.yml).
reboot_policy: the effective policy of a boot layer, the one the rollback's single reboot (the engine action's
rollback, tests/unit/plugins/action/test_engine_rollback_action.py) and the metrics file decide by."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible_collections.edgeslim.jetson.plugins.filter.reboot_policy import reboot_policy
from ansible_collections.edgeslim.jetson.plugins.filter.reboot_policy_errors import reboot_policy_errors

ROOT = Path(__file__).resolve().parents[4]


@pytest.mark.parametrize("value", [True, False, "true", "False", "YES", "no", "1", "0", 1, 0, None, ""], ids=repr)
def test_accepted_or_unset(value):
    assert reboot_policy_errors({"edgeslim_reboot_ok": value}) == []


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("maybe", "'maybe' (str)"),
        ("on", "'on' (str)"),
        ("y", "'y' (str)"),
        (2, "2 (int)"),
        (1.0, "1.0 (float)"),
        (["true"], "['true'] (list)"),
        ({"a": 1}, "{'a': 1} (dict)"),
    ],
)
def test_refused(value, shown):
    errors = reboot_policy_errors({"swiotlb_reboot_ok": value, "edgeslim_reboot_ok": True})
    assert errors == [f"swiotlb_reboot_ok must be true or false (or yes/no, 1/0), got {shown}; nothing was changed"]


def test_input_must_be_a_map():
    with pytest.raises(AnsibleFilterError):
        reboot_policy_errors(["maybe"])


PLAY = """
- hosts: localhost
  gather_facts: false
  connection: local
  tasks:
    - ansible.builtin.import_tasks: {tasks}
    - ansible.builtin.debug: {{msg: {marker}}}
"""


@pytest.mark.parametrize(
    ("extra", "refused"),
    [
        ({"edgeslim_reboot_ok": "maybe"}, "edgeslim_reboot_ok must be true or false"),
        ({"edgeslim_reboot_ok": True, "carveouts_reboot_ok": "on"}, "carveouts_reboot_ok must be true or false"),
        ({"edgeslim_reboot_ok": "true", "swiotlb_reboot_ok": "no"}, None),
    ],
)
def test_slim_task_refuses_before_any_change(tmp_path, extra, refused):
    marker = "first-change-would-run-here"
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(tasks=ROOT / "roles/slim/tasks/reboot_policy.yml", marker=marker))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "tests" / "ansible.cfg"))
    res = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(play), "-e", json.dumps(extra)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if refused:
        assert res.returncode != 0 and refused in res.stdout + res.stderr, res.stdout + res.stderr
        assert marker not in res.stdout
    else:
        assert res.returncode == 0, res.stdout + res.stderr
        assert marker in res.stdout


@pytest.mark.parametrize(
    ("values", "layer", "expect"),
    [
        ({"edgeslim_reboot_ok": True}, "swiotlb", True),  # unset: inherits the common policy
        ({"edgeslim_reboot_ok": True, "carveouts_reboot_ok": None}, "carveouts", True),
        ({"edgeslim_reboot_ok": "false", "swiotlb_reboot_ok": ""}, "swiotlb", False),
        ({"edgeslim_reboot_ok": True, "swiotlb_reboot_ok": False}, "swiotlb", False),  # false overrides true
        ({"edgeslim_reboot_ok": False, "carveouts_reboot_ok": "yes"}, "carveouts", True),
        ({"edgeslim_reboot_ok": None, "swiotlb_reboot_ok": None}, "swiotlb", None),  # undecided
        ({}, "carveouts", None),
    ],
)
def test_filter_effective_policy(values, layer, expect):
    assert reboot_policy(values, layer) is expect


@pytest.mark.parametrize(("values", "layer"), [(["edgeslim_reboot_ok"], "swiotlb"), ({}, "services"), ({}, None)])
def test_filter_refuses_a_bad_call(values, layer):
    with pytest.raises(AnsibleFilterError, match="reboot_policy"):
        reboot_policy(values, layer)


def run_play(tmp_path, play: list, extra: dict | None = None) -> subprocess.CompletedProcess:
    path = tmp_path / "play.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "tests" / "ansible.cfg"))
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(path)]
    if extra:
        argv += ["-e", json.dumps(extra)]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
