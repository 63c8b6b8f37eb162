"""edgeslim.jetson.device_lock against a fake systemd + flock (fake run_command)."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from ansible_collections.edgeslim.jetson.plugins.module_utils import devlock
from ansible_collections.edgeslim.jetson.plugins.modules import device_lock as mod
from modhelper import run_module

HOLDER = {"controller": "ops-laptop", "user": "alice", "playbook": "slim", "started": "2026-11-29T22:00:00Z"}


class FakeDevice:
    """systemd-run / systemctl show|stop / flock, sharing one lock: ``owner`` is the unit holding it."""

    def __init__(self) -> None:
        self.units = {}  # name -> pid of the running holder
        self.owner = None
        self.calls = []
        self.next_pid = 100
        self.lock_taken_late = False  # the unit reports active before flock has forked sleep, once

    def __call__(self, argv):
        self.calls.append(argv)
        cmd = argv[0].rsplit("/", 1)[-1]
        if cmd == "systemd-run":
            unit = argv[argv.index("--unit") + 1]
            lock = argv[argv.index("75") + 1]
            open(lock, "a").close()  # flock creates the file whether or not it gets the lock
            if self.owner is not None:  # flock --nonblock exits 75 at once; --collect unloads the unit
                return 0, "", ""
            self.next_pid += 1
            self.units[unit] = self.next_pid
            self.owner = unit
            return 0, "", ""
        if cmd == "systemctl" and argv[1] == "show":
            unit = argv[-1]
            if unit in self.units:
                return 0, f"LoadState=loaded\nActiveState=active\nMainPID={self.units[unit]}\n", ""
            return 0, "LoadState=not-found\nActiveState=inactive\nMainPID=0\n", ""
        if cmd == "systemctl" and argv[1] == "stop":
            self.kill(argv[2])
            return 0, "", ""
        if cmd == "systemctl" and argv[1] == "reset-failed":
            return 0, "", ""
        if cmd == "flock":
            return (75 if self.owner else 0), "", ""
        raise AssertionError(f"unexpected command {argv!r}")

    def kill(self, unit):
        self.units.pop(unit, None)
        if self.owner == unit:
            self.owner = None

    def children(self, pid, proc="/proc"):
        if self.lock_taken_late:
            self.lock_taken_late = False
            return []
        return ["sleep"] if pid in self.units.values() else []


@pytest.fixture
def dev():
    fake = FakeDevice()
    with mock.patch.object(devlock, "child_comms", fake.children):
        yield fake


def run(dev, tmp_path, check=False, **args):
    args = {"path": str(tmp_path / "edgeslim" / "device.lock"), "holder": HOLDER, **args}
    with mock.patch.object(mod.AnsibleModule, "get_bin_path", lambda _s, name, **_k: "/usr/bin/" + name):
        return run_module(mod.main, args, check=check, run_command=dev)


def record(tmp_path):
    return json.loads((tmp_path / "edgeslim" / "device.json").read_text())


def test_free_lock_is_taken_and_recorded(dev, tmp_path):
    dev.lock_taken_late = True  # first poll: unit active, flock not yet past the lock
    res = run(dev, tmp_path, run_id="r1", ttl=60)
    assert res["changed"] is True and res["held"] is True, res
    assert dev.owner == "edgeslim-lock-r1.service"
    start = next(c for c in dev.calls if c[0].endswith("systemd-run"))
    assert start[start.index("--") + 1 :] == [
        "/usr/bin/flock",
        "--nonblock",
        "--conflict-exit-code",
        "75",
        str(tmp_path / "edgeslim" / "device.lock"),
        "sleep",
        "60",
    ]
    rec = record(tmp_path)
    assert rec["run_id"] == "r1" and rec["user"] == "alice" and rec["ttl"] == 60 and rec["pid"] == 101
    assert res["record"] == rec


def test_taking_it_again_in_the_same_run_changes_nothing(dev, tmp_path):
    run(dev, tmp_path, run_id="r1")
    starts = len([c for c in dev.calls if c[0].endswith("systemd-run")])
    res = run(dev, tmp_path, run_id="r1")
    assert res["changed"] is False and res["held"] is True
    assert len([c for c in dev.calls if c[0].endswith("systemd-run")]) == starts


def test_second_run_is_refused_naming_the_holder(dev, tmp_path):
    run(dev, tmp_path, run_id="first")
    before = record(tmp_path)
    res = run(dev, tmp_path, run_id="second", holder={"controller": "ansible-pull", "playbook": "pull"})
    assert res["failed"] is True and res["held"] is False
    assert "run first (slim, alice@ops-laptop, started 2026-11-29T22:00:00Z" in res["msg"], res["msg"]
    assert "systemctl stop edgeslim-lock-first.service" in res["msg"]
    assert res["holder"] == before
    assert record(tmp_path) == before  # the refused run did not touch the record
    assert dev.owner == "edgeslim-lock-first.service"
    assert not any(c[0].endswith("systemd-run") and "edgeslim-lock-second.service" in c for c in dev.calls)


def test_race_lost_after_the_probe_is_refused_too(dev, tmp_path):
    run(dev, tmp_path, run_id="first")
    probes = iter([0, 75])  # free at the probe, taken by the time our flock runs
    real = dev.__call__

    def racing(argv):
        if argv[0].endswith("flock"):
            dev.calls.append(argv)
            return next(probes), "", ""
        return real(argv)

    res = _run_with(racing, tmp_path, run_id="second")
    assert res["failed"] is True and "run first" in res["msg"]


def _run_with(fake, tmp_path, **args):
    args = {"path": str(tmp_path / "edgeslim" / "device.lock"), "holder": HOLDER, **args}
    with mock.patch.object(mod.AnsibleModule, "get_bin_path", lambda _s, name, **_k: "/usr/bin/" + name):
        return run_module(mod.main, args, run_command=fake)


def test_killed_holder_frees_the_lock(dev, tmp_path):
    run(dev, tmp_path, run_id="first")
    dev.kill("edgeslim-lock-first.service")  # the kernel dropped the flock with the process
    res = run(dev, tmp_path, run_id="second")
    assert res["held"] is True, res
    assert record(tmp_path)["run_id"] == "second"


def test_stale_record_is_not_named_as_the_holder(dev, tmp_path):
    run(dev, tmp_path, run_id="first")
    dev.kill("edgeslim-lock-first.service")
    dev.owner = "someone-else"  # e.g. a manual flock on the file
    res = run(dev, tmp_path, run_id="second")
    assert res["failed"] is True
    assert "no current edgeslim holder record" in res["msg"] and "last record: run first" in res["msg"]


def test_release_stops_the_unit_and_removes_our_record(dev, tmp_path):
    run(dev, tmp_path, run_id="r1")
    res = run(dev, tmp_path, run_id="r1", state="released")
    assert res["changed"] is True and dev.owner is None
    assert not (tmp_path / "edgeslim" / "device.json").exists()
    again = run(dev, tmp_path, run_id="r1", state="released")
    assert again["changed"] is False


def test_release_leaves_another_runs_record(dev, tmp_path):
    run(dev, tmp_path, run_id="first")
    res = run(dev, tmp_path, run_id="other", state="released")
    assert res["changed"] is False
    assert dev.owner == "edgeslim-lock-first.service" and record(tmp_path)["run_id"] == "first"


def test_check_mode_starts_nothing(dev, tmp_path):
    res = run(dev, tmp_path, check=True, run_id="r1")
    assert res["changed"] is True and res["held"] is False
    assert not any(c[0].endswith("systemd-run") for c in dev.calls)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"run_id": "a b"}, "run_id"),
        ({"run_id": "r", "ttl": 0}, "ttl and wait must be > 0"),
        ({"run_id": "r", "path": "rel.lock"}, "path must be absolute"),
    ],
)
def test_bad_input_is_refused_before_anything_runs(dev, tmp_path, args, match):
    res = run(dev, tmp_path, **args)
    assert res["failed"] is True and match in res["msg"]
    assert dev.calls == []
