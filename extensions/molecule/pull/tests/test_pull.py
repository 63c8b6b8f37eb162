"""After the timer's service was refused (lock held) and then pulled: the device runs the served commit, slimmed
under the device lock, the lock is free again, and the report and metrics are on the device."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

EPHEMERAL = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"))
UNIT = "edgeslim-pull"
CHECKOUT = "/var/lib/edgeslim/pull"


def show(host, unit: str, prop: str) -> str:
    return host.check_output(f"systemctl show --property={prop} --value {unit}")


def test_timer_is_enabled_with_a_randomized_delay(host):
    assert host.check_output(f"systemctl is-enabled {UNIT}.timer") == "enabled"
    assert host.check_output(f"systemctl is-active {UNIT}.timer") == "active"
    assert show(host, f"{UNIT}.timer", "RandomizedDelayUSec") == "30min"
    assert show(host, f"{UNIT}.timer", "Triggers") == f"{UNIT}.service"


def test_systemd_accepts_the_unit_files(host):
    result = host.run(f"systemd-analyze verify /etc/systemd/system/{UNIT}.service /etc/systemd/system/{UNIT}.timer")
    assert result.rc == 0, result.stderr
    assert "ANSIBLE_EDGESLIM_REPORT_DIR=/var/lib/edgeslim/reports" in show(host, f"{UNIT}.service", "Environment")


def test_the_service_ran_ansible_pull_of_the_served_commit(host):
    assert show(host, f"{UNIT}.service", "Result") == "success"
    exec_start = show(host, f"{UNIT}.service", "ExecStart")
    assert "ansible-pull" in exec_start and "git://127.0.0.1/edgeslim.git" in exec_start
    assert host.check_output(f"git -C {CHECKOUT} rev-parse HEAD") == (EPHEMERAL / "pull-commit").read_text().strip()
    assert host.check_output(f"git -C {CHECKOUT} remote get-url origin") == "git://127.0.0.1/edgeslim.git"


def test_the_collection_came_from_the_checkout(host):
    # nothing installed on the device, no collections path: only the checkout's collections/ link resolves it
    assert "ANSIBLE_COLLECTIONS_PATH" not in show(host, f"{UNIT}.service", "Environment")
    for path in ("/root/.ansible/collections", "/usr/share/ansible/collections"):
        assert not host.file(path).exists
    link = f"{CHECKOUT}/playbooks/collections/ansible_collections/edgeslim/jetson"
    assert host.check_output(f"readlink -f {link}") == CHECKOUT


def test_pull_slimmed_the_device(host):
    assert host.check_output("systemctl get-default") == "multi-user.target"
    assert not host.service("gdm.service").is_running
    journal = json.loads(host.file("/var/lib/edgeslim/journal.json").content_string)
    assert "services" in journal["layers"] and "swiotlb" in journal["layers"]


def test_the_pull_held_the_device_lock_while_it_ran(host):
    record = json.loads(host.file("/root/lock-during-pull.json").content_string)
    assert record["controller"] == "ansible-pull"
    assert record["playbook"] == "pull"
    assert record["user"] == "root"
    assert record["run_id"] != "held-by-test"
    assert record["unit"] == f"edgeslim-lock-{record['run_id']}.service"


def test_lock_released(host):
    # the pull stopped its holder unit and removed its record; the lock file stays (flock, not existence, is the lock)
    assert host.run("systemctl list-units --all --plain --no-legend 'edgeslim-lock-*'").stdout.strip() == ""
    assert not host.file("/run/edgeslim/device.json").exists
    assert host.run("flock --nonblock --conflict-exit-code 75 /run/edgeslim/device.lock true").rc == 0


def test_report_on_the_device(host):
    report = json.loads(host.file("/var/lib/edgeslim/reports/edgeslim-report.json").content_string)
    (row,) = report["hosts"]
    assert row["host"] == "localhost"
    assert row["status"] == "pending_reboot"
    assert row["reclaimed_mb"]["services"] > 0


@pytest.mark.parametrize(
    "line",
    [
        'edgeslim_last_run_result{playbook="slim",result="ok"} 1',
        'edgeslim_reboot_pending{layer="swiotlb"} 1',
    ],
)
def test_metrics_on_the_device(host, line):
    metrics = host.file("/var/lib/node_exporter/textfile_collector/edgeslim.prom").content_string
    assert line in metrics.splitlines()
    assert any(m.startswith('edgeslim_reclaimed_bytes{layer="services"} ') and int(m.split()[-1]) > 0
               for m in metrics.splitlines())  # fmt: skip
