"""The real `slim` role runs its layers in one order on every host, whatever the batch mixes.

A batch of a camera (no SWIOTLB layer) and a robot (both boot layers) runs `roles/slim` through ansible-playbook with
stand-ins for the layer roles that log what runs on which host. With a loop of includes Ansible groups the includes
by file and variables across hosts, so the camera's carveouts include ran first on the robot too; the rescue's
rollback loop had the same flaw. One fork and the camera first in the inventory make that grouping deterministic.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
LOCK_STUB = """#!/usr/bin/python
import os

from ansible.module_utils.basic import AnsibleModule

ARGS = ("state", "run_id", "path", "ttl", "holder", "journal_path")
module = AnsibleModule(argument_spec={k: {"type": "raw"} for k in ARGS}, supports_check_mode=True)
with open(os.environ["EDGESLIM_TEST_LOCK_LOG"], "a") as log:
    log.write("%s %s %s\\n" % (module.params["state"], module.params["run_id"], module.params["journal_path"]))
module.exit_json(changed=False, held=module.params["state"] != "released")
"""


RUN = " run: deadline,lock,metrics,preflight,report lock True"
JOURNAL = "/var/lib/edgeslim/journal.json"  # the roles' default journal_path


def record(what: str) -> dict:
    return {
        "name": f"Record {what}",
        "ansible.builtin.lineinfile": {
            "path": "{{ order_dir }}/{{ inventory_hostname }}",
            "line": what,
            "create": True,
            "mode": "0644",
        },
    }


# the stand-in rollback's records: every layer it was given rolled back
ROLLED_BACK = (
    "{{ dict(boot_commit_rollback_layers | zip(boot_commit_rollback_layers | map('extract', {'services': {'status': "
    "'rolled_back'}, 'swiotlb': {'status': 'rolled_back'}, 'carveouts': {'status': 'rolled_back'}}))) }}"
)


ENGINE_STUB = [
    record(
        "engine [{{ boot_commit_layers | join(' ') }}] run: {{ boot_commit_run.keys() | sort | join(',') }}"
        " lock {{ boot_commit_run.lock.run_id is string and boot_commit_run.lock.run_id | length > 0 }}"
    ),
    {
        "name": "The records (carveouts not committed after the reboot where asked)",
        "ansible.builtin.set_fact": {
            "boot_commit_call": {"layers": "{{ boot_commit_layers | reject('equalto', 'services') | list }}"},
            "boot_commit_report": "{{ dict(boot_commit_layers | zip(boot_commit_layers | map('extract', "
            "{'services': {'status': 'applied'}, 'swiotlb': {'status': 'applied'}, 'carveouts': {'status': "
            "'reverted' if fail_carveouts | default(false) else 'applied'}}))) }}",
            "boot_commit_verified": {
                "engine_failed": "{{ fail_carveouts | default(false) and 'carveouts' in boot_commit_layers }}"
            },
            # the engine gives the lock back itself, unless a failure left a change for the rescue
            "boot_commit_lock_held": "{{ fail_carveouts | default(false) and 'carveouts' in boot_commit_layers }}",
            "boot_commit_engine": {
                "preflight": {"model": "stand-in"},
                "memory": {"before": {"MemTotal_kb": 1000, "MemAvailable_kb": 500, "boot_id": "b"}},
            },
        },
    },
    {
        "name": "Fail where asked",
        "ansible.builtin.fail": {"msg": "carveouts reverted"},
        "when": "boot_commit_verified.engine_failed",
    },
]


def stub_roles(roles: Path) -> None:
    """Stand-ins for the roles `slim` includes: each logs itself; the engine call reports carveouts reverted where
    `fail_carveouts` is set."""
    files = {
        "profile/tasks/main.yml": [
            {"name": "Profile", "ansible.builtin.set_fact": {"edgeslim_profile": "{{ test_profile }}"}}
        ],
        "preflight/tasks/main.yml": [record("preflight role")],
        "measure/tasks/baseline.yml": [record("baseline")],
        "measure/tasks/after.yml": [record("after")],
        "metrics/tasks/main.yml": [record("metrics {{ metrics_playbook }} {{ metrics_result | default('ok') }}")],
        "services/tasks/inputs.yml": [{"name": "Options", "ansible.builtin.set_fact": {"services_engine": {}}}],
        "boot_commit/tasks/engine.yml": ENGINE_STUB,
        "boot_commit/tasks/rollback.yml": [
            record("rollback {{ boot_commit_rollback_layers | join(' ') }}"),
            {"name": "The records", "ansible.builtin.set_fact": {"boot_commit_rollback": {"report": ROLLED_BACK}}},
        ],
    }
    for layer in ("swiotlb", "carveouts"):
        files[f"{layer}/tasks/inputs.yml"] = [
            {"name": "Inputs", "ansible.builtin.set_fact": {f"{layer}_inputs": {}, f"{layer}_boot": {}}}
        ]
    for name, tasks in files.items():
        (roles / name).parent.mkdir(parents=True, exist_ok=True)
        (roles / name).write_text(yaml.safe_dump(tasks, sort_keys=False))


@pytest.fixture
def collection(tmp_path) -> Path:
    """edgeslim.jetson with the real slim role and plugins, stand-ins for the layer roles."""
    base = tmp_path / "collections"
    coll = base / "ansible_collections" / "edgeslim" / "jetson"
    (coll / "roles").mkdir(parents=True)
    # The real plugins, but a device_lock that takes no lock: it would start systemd units on this machine.
    for sub in (ROOT / "plugins").iterdir():
        if sub.name != "modules":
            (coll / "plugins" / sub.name).parent.mkdir(parents=True, exist_ok=True)
            (coll / "plugins" / sub.name).symlink_to(sub)
    (coll / "plugins" / "modules").mkdir()
    for module in (ROOT / "plugins" / "modules").glob("*.py"):
        if module.name != "device_lock.py":
            (coll / "plugins" / "modules" / module.name).symlink_to(module)
    (coll / "plugins" / "modules" / "device_lock.py").write_text(LOCK_STUB)
    (coll / "roles" / "slim").symlink_to(ROOT / "roles" / "slim")
    stub_roles(coll / "roles")
    return base


def run_slim(tmp_path: Path, collection: Path, fail_carveouts: bool, *args: str) -> dict[str, list[str]]:
    order_dir = tmp_path / "order"
    order_dir.mkdir()
    profiles = {
        "camera": {
            "blocks": ["headless"],
            "services": {"disable": ["gdm.service"]},
            "carveouts": {"recipes": ["headless"]},
        },
        "robot": {
            "blocks": ["headless"],
            "services": {"disable": ["gdm.service"]},
            "swiotlb": {"size_mib": 4},
            "carveouts": {"recipes": ["headless"]},
        },
    }
    # The camera first: with one fork its results come back first, as when it is the faster host of a batch.
    inventory = {
        "all": {
            "hosts": {
                "camera-01": {"test_profile": profiles["camera"]},
                "robot-01": {"test_profile": profiles["robot"]},
            },
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "order_dir": str(order_dir),
                "edgeslim_reboot_ok": False,
                "fail_carveouts": fail_carveouts,
            },
        }
    }
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    play = [{"name": "Slim", "hosts": "all", "gather_facts": False, "roles": [{"role": "edgeslim.jetson.slim"}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collection), ANSIBLE_FORKS="1", ANSIBLE_RETRY_FILES_ENABLED="0")
    env["EDGESLIM_TEST_LOCK_LOG"] = str(tmp_path / "lock.log")
    for name in ("ANSIBLE_CONFIG", "ANSIBLE_CALLBACKS_ENABLED"):  # no repository ansible.cfg, no report
        env.pop(name, None)
    playbook = Path(sys.executable).with_name("ansible-playbook")
    res = subprocess.run(
        [str(playbook), "-i", "inventory.yml", "play.yml", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == (2 if fail_carveouts else 0), res.stdout + res.stderr
    return {host.name: host.read_text().split("\n")[:-1] for host in sorted(order_dir.iterdir())}


def test_one_engine_call_with_the_layers_in_order_on_every_host_of_a_mixed_batch(tmp_path, collection):
    # lock, pre-flight, snapshots and metrics ride in the engine's device runs: no role of their own
    assert run_slim(tmp_path, collection, fail_carveouts=False) == {
        "camera-01": ["engine [services carveouts]" + RUN],
        "robot-01": ["engine [services swiotlb carveouts]" + RUN],
    }


def test_rollback_in_reverse_order_on_every_host_of_a_mixed_batch(tmp_path, collection):
    """A boot change the device did not commit: every boot layer of that boot, then (scope host) services, in one
    rollback (boot layers first)."""
    assert run_slim(tmp_path, collection, fail_carveouts=True) == {
        "camera-01": ["engine [services carveouts]" + RUN, "rollback carveouts services", "metrics slim failed"],
        "robot-01": ["engine [services swiotlb carveouts]" + RUN, "rollback carveouts swiotlb services",
                     "metrics slim failed"],
    }  # fmt: skip


@pytest.mark.parametrize("fail_carveouts", [False, True])
def test_device_lock_taken_first_and_released_also_on_failure(tmp_path, collection, fail_carveouts):
    order = run_slim(tmp_path, collection, fail_carveouts=fail_carveouts)
    lock_log = tmp_path / "lock.log"
    log = lock_log.read_text().split() if lock_log.exists() else []
    # The engine's probe takes the lock and its last run gives it back: no device_lock run of its own. A failure that
    # left a change for the rescue left the lock held: the rescue restores under it and releases it once per host,
    # naming the engine's journal (the run's deadline record is beside it: the release disarms it).
    if fail_carveouts:
        run_id = log[1]
        assert log == ["released", run_id, JOURNAL] * 2, log
    else:
        assert log == [], log
    assert order["robot-01"][0].startswith("engine [services swiotlb carveouts]")


@pytest.mark.parametrize(
    ("args", "robot", "camera"),
    [
        (["--tags", "swiotlb"], "swiotlb", None),
        (["--tags", "carveouts,services"], "services carveouts", "services carveouts"),
        (["--skip-tags", "carveouts"], "services swiotlb", "services"),
        (["--tags", "headless"], "services", "services"),  # a services profile block
    ],
)
def test_tags_select_layers_and_the_flow_runs_around_them(tmp_path, collection, args, robot, camera):
    order = run_slim(tmp_path, collection, False, *args)
    assert order["robot-01"] == [f"engine [{robot}]" + RUN]
    # a host with no selected layer still has its one engine call: lock, pre-flight, snapshots, metrics
    assert order["camera-01"] == [f"engine [{camera or ''}]" + RUN]
