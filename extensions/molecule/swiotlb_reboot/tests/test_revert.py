"""prepare (the revert branch): the device reverted to the stock entry by itself, the play failed the host, nothing
pending was left. Read from what prepare kept under /root/revert/ right after the revert (converge then commits)."""

from __future__ import annotations

import json


def test_device_reverted_by_itself(host):
    verdict = json.loads(host.file("/root/revert/swiotlb.json").content_string)
    assert verdict["status"] == "reverted" and verdict["reverted_to"] == "primary"
    assert any("health command failed" in f for f in verdict["failures"])


def test_play_failed_the_host(host):
    outcome = host.file("/root/play-outcome").content_string
    assert outcome.startswith("failed:") and "did not commit" in outcome


def test_stock_file_back_and_nothing_pending(host):
    assert host.file("/root/revert/extlinux.conf").content == host.file("/root/extlinux.conf.stock").content
    assert host.file("/root/revert/pending").content_string.strip() == "absent"
