"""Batch planning (module_utils/rollout.py, used by the rollout_guard action and the report callback on the
controller) matches Ansible's own split; serial / max_fail_percentage values compare by meaning."""

from __future__ import annotations

import pytest
from ansible.executor.playbook_executor import PlaybookExecutor
from ansible_collections.edgeslim.jetson.plugins.module_utils.rollout import (
    normalize_percent,
    normalize_serial,
    plan_batches,
)


class _Inventory:
    def __init__(self, n):
        self.hosts = [f"h{i}" for i in range(n)]

    def get_hosts(self, *args, **kwargs):
        return list(self.hosts)


class _Play:
    hosts = "all"
    order = None

    def __init__(self, serial):
        self.serial = serial


@pytest.mark.parametrize("serial", [[], [1], [1, "10%", "100%"], ["30%"], [2, 5], [0], ["1%", 3]])
@pytest.mark.parametrize("hosts", [1, 4, 10, 23, 101])
def test_plan_matches_ansible(serial, hosts):
    executor = PlaybookExecutor.__new__(PlaybookExecutor)
    executor._inventory = _Inventory(hosts)
    expected = [len(b) for b in executor._get_serialized_batches(_Play(serial))]
    assert plan_batches(serial, hosts) == expected


def test_normalize():
    assert normalize_serial("2") == normalize_serial(2) == normalize_serial([2.0]) == [2]
    assert normalize_serial([1, "10%", "100.0%"]) == [1, "10%", "100%"]
    assert normalize_serial(None) == normalize_serial([]) == []
    assert normalize_percent("20%") == normalize_percent(20) == 20.0
    assert normalize_percent(None) is None
    with pytest.raises(ValueError):
        normalize_serial(["ten"])
    with pytest.raises(ValueError):
        normalize_percent(True)
