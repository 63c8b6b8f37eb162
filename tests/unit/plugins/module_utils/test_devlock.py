"""Pure parts of the device lock: unit name, argv, holder record, busy/free decisions, refusal message."""

from __future__ import annotations

import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import devlock


def test_holder_argv_is_flock_under_a_transient_unit():
    argv = devlock.holder_argv("/usr/bin/systemd-run", "/usr/bin/flock", "/run/edgeslim/device.lock", "r-1", 7200)
    assert argv == [
        "/usr/bin/systemd-run",
        "--unit",
        "edgeslim-lock-r-1.service",
        "--collect",
        "--quiet",
        "-p",
        "RuntimeMaxSec=7200",
        "-p",
        "TimeoutStopSec=10",
        "--",
        "/usr/bin/flock",
        "--nonblock",
        "--conflict-exit-code",
        "75",
        "/run/edgeslim/device.lock",
        "sleep",
        "7200",
    ]


@pytest.mark.parametrize("bad", ["", "a b", "../x", "-x", "x;rm", "a" * 65, "é"])
def test_run_id_that_cannot_name_a_unit_is_refused(bad):
    with pytest.raises(devlock.LockError, match="run_id"):
        devlock.unit_name(bad)


def test_ttl_must_be_positive():
    with pytest.raises(devlock.LockError, match="ttl"):
        devlock.holder_argv("systemd-run", "flock", "/run/x.lock", "r", 0)


def test_record_beside_the_lock():
    assert devlock.record_path("/run/edgeslim/device.lock") == "/run/edgeslim/device.json"
    assert devlock.record_path("/run/edgeslim/lk") == "/run/edgeslim/lk.json"


def test_parse_show_and_proc_stat():
    assert devlock.parse_show("LoadState=loaded\nActiveState=active\nMainPID=42\n") == {
        "LoadState": "loaded",
        "ActiveState": "active",
        "MainPID": "42",
    }
    assert devlock.parse_proc_stat("4243 (sleep) S 4242 4242 4242 0 -1") == ("sleep", 4242)
    assert devlock.parse_proc_stat("7 (a) b) R 1 7 7") == ("a) b", 1)
    with pytest.raises(ValueError):
        devlock.parse_proc_stat("garbage")


@pytest.mark.parametrize(
    ("show", "children", "state"),
    [
        ({"LoadState": "loaded", "ActiveState": "active", "MainPID": "42"}, ["sleep"], "held"),
        # flock started but has not forked its command yet: no decision
        ({"LoadState": "loaded", "ActiveState": "active", "MainPID": "42"}, [], "pending"),
        ({"LoadState": "loaded", "ActiveState": "activating"}, [], "pending"),
        # exited 75 (busy) and collected, or never started
        ({"LoadState": "not-found", "ActiveState": "inactive", "MainPID": "0"}, [], "ended"),
        ({"LoadState": "loaded", "ActiveState": "failed"}, [], "ended"),
        ({}, [], "ended"),
    ],
)
def test_holder_state(show, children, state):
    assert devlock.holder_state(show, children) == state


def test_record_names_the_holder_and_expiry():
    holder = {"controller": "ops-laptop", "user": "alice", "playbook": "slim", "started": "2026-11-29T22:00:00Z"}
    rec = devlock.new_record("r-1", holder, "/run/edgeslim/device.lock", 7200, 4242, now=0)
    assert rec == {
        "run_id": "r-1",
        "controller": "ops-laptop",
        "user": "alice",
        "playbook": "slim",
        "started": "2026-11-29T22:00:00Z",
        "acquired": "1970-01-01T00:00:00Z",
        "expires": "1970-01-01T02:00:00Z",
        "ttl": 7200,
        "unit": "edgeslim-lock-r-1.service",
        "pid": 4242,
        "lock": "/run/edgeslim/device.lock",
    }
    assert devlock.new_record("r", {}, "/l", 1, 1, now=0)["controller"] == "unknown"


def test_busy_message_names_the_live_holder():
    rec = devlock.new_record("r-1", {"controller": "ansible-pull", "user": "root", "playbook": "pull"}, "/l", 60, 9, 0)
    msg = devlock.busy_message("/l", rec, True)
    assert "run r-1 (pull, root@ansible-pull" in msg
    assert "systemctl stop edgeslim-lock-r-1.service" in msg
    assert "nothing was changed" in msg
    stale = devlock.busy_message("/l", rec, False)
    assert "no current edgeslim holder record" in stale and "last record: run r-1" in stale
    assert "fuser -v /l" in devlock.busy_message("/l", {}, False)
